"""Build a chat client from a short spec string, as used on command lines and in configs.

Specs: ``openai:URL`` (any OpenAI-compatible server, e.g. ``openai:http://localhost:8000/v1``),
``hf:PATH_OR_NAME`` (a local transformers model), ``vllm:NAME`` (an in-process vLLM engine) and ``tiny`` (the
tiny random model of :mod:`drgym.llm.tiny`). Model libraries are imported only for the spec that needs them.
"""

from __future__ import annotations

import difflib
from typing import Any

from drgym.errors import ConfigError
from drgym.llm.base import ChatClient

__all__ = ["SPECS", "make_client"]

SPECS = ("openai:URL", "hf:PATH_OR_NAME", "vllm:NAME", "tiny")
"""The spec forms :func:`make_client` accepts."""


def make_client(spec: str, *, model: str | None = None, **kw: Any) -> ChatClient:
    """Build a chat client from ``spec``.

    Args:
        spec: One of :data:`SPECS`.
        model: For ``openai:``, the model name sent with requests (``None``: the server's first model). For
            ``hf:``/``vllm:``, the model when the spec names none (``"hf:"``).
        **kw: Passed to the client's constructor (``OpenAIChatClient``, ``TransformersChatClient``,
            ``VLLMChatClient``); for ``tiny``, ``tiny_seed`` sets the weights' seed and ``tiny_config`` overrides
            its config.

    Raises:
        ConfigError: An unknown or incomplete spec; the message lists the valid forms.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"LLM spec must be a string, one of {', '.join(SPECS)}; got {spec!r}")
    scheme, sep, rest = spec.strip().partition(":")
    scheme = scheme.lower()
    if scheme == "tiny" and not sep:
        from drgym.llm.tiny import tiny_chat_client

        return tiny_chat_client(seed=kw.pop("tiny_seed", 0), config=kw.pop("tiny_config", None), **kw)
    if scheme == "openai" and sep:
        from drgym.llm.openai import OpenAIChatClient

        return OpenAIChatClient(rest, model, **kw)
    if scheme in ("hf", "vllm") and sep:
        name = rest or model
        if not name:
            raise ConfigError(f"LLM spec {spec!r} names no model; write {scheme}:PATH_OR_NAME")
        if rest and model and model != rest:
            raise ConfigError(f"LLM spec {spec!r} and model={model!r} name different models; give one")
        if scheme == "hf":
            from drgym.llm.local import TransformersChatClient

            return TransformersChatClient(name, **kw)
        from drgym.llm.vllm import VLLMChatClient

        return VLLMChatClient(name, **kw)
    raise ConfigError(_unknown(spec, scheme))


def _unknown(spec: str, scheme: str) -> str:
    message = f"unknown LLM spec {spec!r}; valid: {', '.join(SPECS)}"
    if scheme in ("http", "https"):
        return f"{message}. Did you mean: 'openai:{spec}'?"
    close = difflib.get_close_matches(scheme, ["openai", "hf", "vllm", "tiny"], n=1)
    if close:
        return f"{message}. Did you mean: {close[0]!r}?"
    return message
