"""Which chat model an LLM agent talks to: a client object, or a spec string resolved once per process.

The runners build one agent per concurrent episode, so agents built from the same spec must share one client:
one HTTP session (and connection pool) per server, one copy of a local model's weights, and one micro-batcher
that can batch the episodes' requests together. Agents count as users of a shared client; when the last one
is closed (:func:`release_llm`), the client's sessions are closed. The client object stays cached (a local
model is never loaded twice) and opens new sessions if it is used again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drgym.errors import ConfigError
from drgym.llm import SPECS, ChatClient, make_client

__all__ = ["close_shared_clients", "no_llm_message", "release_llm", "resolve_llm", "sampling_options"]


@dataclass
class _Shared:
    client: ChatClient
    users: int = 0


_clients: dict[tuple[str, str | None, str], _Shared] = {}
_lock = threading.Lock()


def no_llm_message(agent: str, cli_name: str) -> str:
    """What to tell a user who asked for an LLM agent without naming a model."""
    return (
        f"{agent} needs a language model, but none is configured. Pass llm= (a ChatClient, or a spec: "
        f"{', '.join(SPECS)}) and model= (the model name the server serves). From the command line: "
        f"`drgym episode --agent {cli_name} --llm openai:http://localhost:8000/v1 --model NAME`; to serve a "
        "local model first, run `python -m drgym.llm.server --model tiny --port 8000` (the tiny random test "
        "model) or `python -m drgym.llm.server --model Qwen/Qwen2.5-7B-Instruct --port 8000`."
    )


def resolve_llm(
    llm: str | ChatClient | None,
    model: str | None,
    *,
    agent: str,
    cli_name: str,
    client_kwargs: Mapping[str, Any] | None = None,
) -> ChatClient:
    """The client for ``llm``: returned as is when it is a client, else built from the spec once per process.

    A client built from a spec counts one more user; pair each call with :func:`release_llm`.

    Args:
        llm: A ``ChatClient`` or a spec (``openai:URL``, ``hf:PATH``, ``vllm:NAME``, ``tiny``).
        model: With a spec, the model name (``openai:``) or model (``hf:``/``vllm:`` when the spec has none).
        agent: The agent's class name, for messages.
        cli_name: The agent's registry name, for the command-line hint.
        client_kwargs: Constructor arguments of the client built from a spec (``max_concurrency``,
            ``timeout``...); part of the sharing key.

    Raises:
        ConfigError: No LLM, a bad spec, or ``model``/``client_kwargs`` given with a client object.
    """
    if llm is None:
        raise ConfigError(no_llm_message(agent, cli_name))
    if isinstance(llm, str):
        kwargs = dict(client_kwargs or {})
        key = (llm.strip(), model, repr(sorted(kwargs.items())))
        with _lock:
            shared = _clients.get(key)
            if shared is None:
                shared = _clients[key] = _Shared(make_client(llm, model=model, **kwargs))
            shared.users += 1
        return shared.client
    if not isinstance(llm, ChatClient):
        raise ConfigError(
            f"{agent}: llm must be a ChatClient or a spec string ({', '.join(SPECS)}), "
            f"got {type(llm).__name__}"
        )
    if model is not None or client_kwargs:
        raise ConfigError(
            f"{agent}: model= and llm_kwargs= apply only when llm is a spec string; configure the client "
            "object itself instead"
        )
    return llm


async def release_llm(client: ChatClient) -> None:
    """One user of a spec-built client is done; the last one closes its sessions. Other clients: no-op."""
    with _lock:
        shared = next((s for s in _clients.values() if s.client is client), None)
        if shared is None or shared.users == 0:
            return
        shared.users -= 1
        last = shared.users == 0
    if last:
        await _aclose(client)


async def close_shared_clients() -> None:
    """Close every client built from a spec string, in use or not, and forget them (end of a program)."""
    with _lock:
        shared = list(_clients.values())
        _clients.clear()
    for entry in shared:
        await _aclose(entry.client)


async def _aclose(client: ChatClient) -> None:
    close = getattr(client, "aclose", None)
    if close is not None:
        await close()


def sampling_options(
    *,
    temperature: float,
    max_tokens: int,
    stop: Sequence[str],
    top_p: float | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The sampling arguments an agent passes to ``ChatClient.complete`` (unset options left to the server)."""
    options: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "stop": list(stop)}
    if top_p is not None:
        options["top_p"] = top_p
    if seed is not None:
        options["seed"] = seed
    options.update(extra or {})
    return options
