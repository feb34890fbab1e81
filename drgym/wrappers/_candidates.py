"""Candidate answer spans, gathered incrementally from the text an episode has seen.

A span is a capitalised name, a date, a year or a number that occurs in a sentence sharing content words with
the question. Its *support* sums, over the sentences it occurs in, the number of question words the sentence
holds, doubled when the span's kind is the kind the question asks for. Each piece of text is scored once when
it arrives, so ranking after every step costs a sort, not a rescan of the episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from drgym.answer_spans import SENTENCE, content_words, is_yes_no, span_candidates, wanted_kind

__all__ = ["KINDS", "SpanStats", "SpanTable", "content_words", "is_yes_no", "wanted_kind"]

KINDS = ("date", "number", "name")
"""Span kinds the wrapper ranks, in the order the features one-hot encode them."""


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
        wanted = wanted_kind(question)
        self.wanted = wanted if wanted in KINDS else "name"  # role spans are not ranked here
        self.yes_no = is_yes_no(question)
        self._spans: dict[str, SpanStats] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def add(self, text: str, *, from_page: bool, rank: int | None = None) -> None:
        """Score every sentence of ``text`` (from the search result at ``rank``, if known); credit its spans."""
        n_question = max(1, len(self.question_words))
        for sentence in SENTENCE.split(text):
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
    """Candidate spans of a sentence of the kinds the wrapper encodes."""
    return [(span, kind) for span, kind in span_candidates(sentence) if kind in KINDS]
