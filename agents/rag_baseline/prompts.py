"""The CoT + RAG prompt: retrieved passages and the question, answered in one reply with reasoning."""

from __future__ import annotations

import re
from collections.abc import Sequence

from drgym import protocol

from .retrieve import RetrievedPassage

__all__ = ["SYSTEM_PROMPT", "rag_messages"]

SYSTEM_PROMPT = (
    "Answer the question. First think it through step by step inside <think></think>, then write the final "
    "answer inside <answer></answer>: just the entity, date, number or short phrase asked for, with no "
    "explanation. If the question is a yes-or-no question, answer only yes or no."
)

_WITH_PASSAGES = (
    "These passages were retrieved for the question. They may be incomplete or unrelated: use them where "
    "they help, and your own knowledge otherwise."
)
_TODAY = re.compile(r"^Today is [^\n]{1,120}\.$", re.MULTILINE)


def rag_messages(
    question: str, passages: Sequence[RetrievedPassage], env_system_prompt: str = ""
) -> list[dict[str, str]]:
    """Chat messages for one CoT (no passages) or CoT + RAG question; passage text is tag-escaped.

    The date line of the environment's system prompt (``Today is …``) is kept, so time-sensitive questions
    are answered as of the same day a research agent is told.
    """
    today = _TODAY.search(env_system_prompt or "")
    system = f"{today.group(0)}\n\n{SYSTEM_PROMPT}" if today else SYSTEM_PROMPT
    parts = []
    if passages:
        blocks = [f"[{i}] {_safe(p.title)}\n{_safe(p.text)}" for i, p in enumerate(passages, 1)]
        parts.append(_WITH_PASSAGES + "\n\n" + "\n\n".join(blocks))
    parts.append(f"Question: {question.strip()}")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def _safe(text: str) -> str:
    return protocol.escape_tags(" ".join(text.split()))
