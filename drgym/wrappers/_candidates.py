"""Candidate answer spans, gathered incrementally from the text an episode has seen.

A span is a capitalised name, a date, a year or a number that occurs in a sentence sharing content words with
the question. Its *support* sums, over the sentences it occurs in, the number of question words the sentence
holds, doubled when the span's kind is the kind the question asks for. Each piece of text is scored once when
it arrives, so ranking after every step costs a sort, not a rescan of the episode.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["KINDS", "SpanStats", "SpanTable", "content_words", "is_yes_no", "wanted_kind"]

KINDS = ("date", "number", "name")
"""Span kinds, in the order the features one-hot encode them."""

# fmt: off
_STOP = frozenset({
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and", "or", "but", "is",
    "are", "was", "were", "be", "been", "being", "do", "does", "did", "has", "have", "had", "what",
    "which", "who", "whom", "whose", "when", "where", "why", "how", "that", "this", "these", "those", "it",
    "its", "as", "than", "then", "there", "their", "they", "he", "she", "his", "her", "him", "i", "you",
    "we", "our", "your", "my", "me", "not", "no", "yes", "if", "so", "into", "about", "over", "after",
    "before", "under", "between", "during", "many", "much", "one", "first", "name", "named", "also",
    "same", "both", "either",
})
# fmt: on
_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"\b(?:\d{{1,2}} (?:{_MONTHS}) \d{{4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{4}}|(?:{_MONTHS}) \d{{4}})\b"
)
_YEAR = re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|the|de|von|van|and|&)?\s*[A-Z][\w'’.-]*)*")
_YES_NO_START = re.compile(
    r"^(?:is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.IGNORECASE
)
_MAX_SPAN_CHARS = 80


@functools.lru_cache(maxsize=8192)
def content_words(text: str) -> frozenset[str]:
    """Lowercased words of ``text`` that carry meaning (stopwords and one-letter words removed).

    Cached: the same sentences, titles and spans come back turn after turn within an episode.
    """
    return frozenset(w.lower() for w in _WORD.findall(text) if len(w) > 1 and w.lower() not in _STOP)


def is_yes_no(question: str) -> bool:
    """True for questions answered yes or no (they start with an auxiliary verb)."""
    return bool(_YES_NO_START.match(question.strip()))


def wanted_kind(question: str) -> str:
    """The span kind a question asks for: ``date``, ``number`` or ``name``."""
    q = question.lower()
    if re.search(r"\b(?:when|what year|which year|what date|born on)\b", q):
        return "date"
    if re.search(r"\bhow (?:many|much|old|long|tall|far)\b", q):
        return "number"
    return "name"


@dataclass
class SpanStats:
    """What is known about one candidate span.

    Attributes:
        text: The span as it appeared first.
        kind: ``date``, ``number`` or ``name``.
        support: Sum over its sentences of question-word overlap (×2 when the kind is the wanted one).
        count: Sentences it occurred in.
        best_overlap: Largest fraction of the question's content words in one of its sentences.
        in_page: Whether it occurred in a browsed page (not only in a search snippet).
        best_rank: Best (lowest, 0-based) search rank of a result it occurred in; ``None`` when unknown.
    """

    text: str
    kind: str
    support: float = 0.0
    count: int = 0
    best_overlap: float = 0.0
    in_page: bool = False
    best_rank: int | None = None


class SpanTable:
    """Candidate spans of one episode; :meth:`add` new text, :meth:`ranked` the best first."""

    def __init__(self, question: str) -> None:
        self.question = question
        self.question_words = content_words(question)
        self.wanted = wanted_kind(question)
        self.yes_no = is_yes_no(question)
        self._spans: dict[str, SpanStats] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def add(self, text: str, *, from_page: bool, rank: int | None = None) -> None:
        """Score every sentence of ``text`` (from the search result at ``rank``, if known); credit its spans."""
        n_question = max(1, len(self.question_words))
        for sentence in _SENTENCE.split(text):
            overlap = len(self.question_words & content_words(sentence))
            if overlap == 0:
                continue
            seen: set[str] = set()
            for span, kind in _spans_of(sentence):
                key = span.lower()
                words = content_words(span)
                if key in seen or not words or words <= self.question_words:
                    continue  # a span the question already names is not its answer
                seen.add(key)
                stats = self._spans.setdefault(key, SpanStats(span, kind))
                stats.support += overlap * (2.0 if kind == self.wanted else 1.0)
                stats.count += 1
                stats.best_overlap = max(stats.best_overlap, overlap / n_question)
                stats.in_page = stats.in_page or from_page
                if rank is not None and (stats.best_rank is None or rank < stats.best_rank):
                    stats.best_rank = rank

    def ranked(self, kind: str | None = None) -> list[SpanStats]:
        """Spans by support (ties: shorter, then alphabetical), optionally only those of one kind."""
        spans = [s for s in self._spans.values() if kind is None or s.kind == kind]
        return sorted(spans, key=lambda s: (-s.support, len(s.text), s.text))


def _spans_of(sentence: str) -> list[tuple[str, str]]:
    """Candidate spans of a sentence with their kinds; a date wins over the year and numbers inside it."""
    found: list[tuple[str, str]] = [(m.group(0), "date") for m in _DATE.finditer(sentence)]
    found += [(m.group(0), "date") for m in _YEAR.finditer(sentence)]
    found += [(m.group(0).rstrip(".,"), "number") for m in _NUMBER.finditer(sentence)]
    found += [(m.group(0).strip().rstrip(".,"), "name") for m in _NAME.finditer(sentence)]
    return [(span, kind) for span, kind in found if span and len(span) <= _MAX_SPAN_CHARS]
