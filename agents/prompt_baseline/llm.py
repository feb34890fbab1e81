"""Which chat model an LLM agent talks to: a client object (shared, the caller's), or a spec string (the agent's own).

An agent built from a spec makes its own client and closes it in ``aclose()``. Agents that should share one
client (one HTTP session and connection pool per server, one copy of a local model's weights, one micro-batcher
that batches the episodes' requests together) are given it: build it once with :func:`drgym.llm.make_client`
(or :func:`shared_client`), pass it as ``llm=`` to each agent, and close it when they are done. The runners and
the benchmark do this; nothing is shared behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drgym.errors import ConfigError
from drgym.llm import SPECS, ChatClient, make_client

__all__ = ["close_client", "no_llm_message", "resolve_llm", "sampling_options", "shared_client"]


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
) -> tuple[ChatClient, bool]:
    """The client for ``llm`` and whether the agent owns it: a client object is the caller's (``False``), a
    spec builds a new client the agent owns and closes (``True``).

    Args:
        llm: A ``ChatClient`` or a spec (``openai:URL``, ``hf:PATH``, ``vllm:NAME``, ``tiny``).
        model: With a spec, the model name (``openai:``) or model (``hf:``/``vllm:`` when the spec has none).
        agent: The agent's class name, for messages.
        cli_name: The agent's registry name, for the command-line hint.
        client_kwargs: Constructor arguments of the client built from a spec (``max_concurrency``,
            ``timeout``...).

    Raises:
        ConfigError: No LLM, a bad spec, or ``model``/``client_kwargs`` given with a client object.
    """
    if llm is None:
        raise ConfigError(no_llm_message(agent, cli_name))
    if isinstance(llm, str):
        return make_client(llm.strip(), model=model, **dict(client_kwargs or {})), True
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
    return llm, False


def shared_client(kwargs: dict[str, Any]) -> ChatClient | None:
    """Turn an agent's ``llm=<spec>`` (with ``model=``, ``llm_kwargs=``) in ``kwargs`` into one client, in place.

    For a runner that builds many agents from the same options: it calls this once, builds every agent from
    the rewritten ``kwargs`` (they share the returned client) and closes the client with :func:`close_client`
    after the last agent. Returns ``None`` (and leaves ``kwargs`` alone) when ``llm`` is not a spec.
    """
    spec = kwargs.get("llm")
    if not isinstance(spec, str):
        return None
    client = make_client(spec.strip(), model=kwargs.pop("model", None), **dict(kwargs.pop("llm_kwargs", None) or {}))
    kwargs["llm"] = client
    return client


async def close_client(client: ChatClient) -> None:
    """Close a client's sessions (clients without ``aclose`` hold none)."""
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
