"""The two record types every loader produces: questions with gold answers, and corpus passages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Passage", "QARecord", "describe_record", "record_problem"]


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


def record_problem(question: Any, answers: Sequence[Any]) -> str | None:
    """What makes a record unusable for a scored episode (an empty question, no gold answer), or ``None``.

    ``answers`` are the gold answers after splitting and stripping; an episode over a record without any
    would be played to the end and could not be scored, so loaders refuse such records up front.
    """
    if not isinstance(question, str) or not question.strip():
        return f"its question is empty or not a string ({question!r:.60})"
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        return "it has no usable gold answer"
    return None


def describe_record(index: int | str, question: Any, raw_answers: Any = None) -> str:
    """How an error names a record: its position, its question and (when given) the answers it came with."""
    text = f"record {index} (question {question!r:.100}"
    return text + (f", answers {raw_answers!r:.60})" if raw_answers is not None else ")")
