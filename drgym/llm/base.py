"""The chat-model interface shared by the browsing agent, the baselines and the GRPO rollouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from drgym.errors import LLMError

__all__ = ["ChatClient", "Completion", "ContextOverflowError", "Message"]

Message = dict[str, Any]
"""An OpenAI-style chat message: ``{"role": "system"|"user"|"assistant"|"tool", "content": str}``."""


@dataclass(frozen=True)
class Completion:
    """One generated reply. ``tokens`` is the number of completion tokens when known; ``token_ids`` and
    ``logprobs`` are filled by backends that can report them (local models, vLLM)."""

    text: str
    tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    extras: dict[str, Any] = field(default_factory=dict, compare=False)


class ContextOverflowError(LLMError):
    """The conversation no longer fits the model's context window.

    A distinct type because it is not a fault to retry: an agent that meets it should end the episode
    gracefully (e.g. answer with what it has) instead of counting an infrastructure failure.
    """


@runtime_checkable
class ChatClient(Protocol):
    """Anything that completes a chat asynchronously. Raises :class:`drgym.errors.LLMError` on failure."""

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        ...
