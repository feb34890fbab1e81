"""The two record types every loader produces: questions with gold answers, and corpus passages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Passage", "QARecord"]


@dataclass(frozen=True)
class QARecord:
    """A question with its gold answers. ``source`` is the data source (``nq``, ``hotpotqa``, ``bamboogle`` ...)."""

    question: str
    answers: list[str]
    source: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Passage:
    """A titled corpus passage with a stable id; ``source`` names the file it came from (attribution)."""

    id: str
    title: str
    text: str
    source: str = ""
