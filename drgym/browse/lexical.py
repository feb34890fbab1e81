"""A reader without a language model: keeps the passages that share the most words with the question.

The offline backend uses it by default, so episodes cost no model calls and stay deterministic. Short documents
come back whole; long ones are cut into paragraphs (sentences when a paragraph is long), each scored by the
IDF-weighted query terms it contains, and the best are kept in document order within the notes budget.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections import Counter
from dataclasses import dataclass

from drgym.browse.base import PageNotes
from drgym.browse.memory import EpisodeMemory
from drgym.document import Document
from drgym.errors import ConfigError
from drgym.web.segment import segment_text

__all__ = ["LexicalReader", "select_passages"]

_WORD = re.compile(r"\w+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_GAP = "\n[…]\n"
_STOPWORDS = frozenset(
    {
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are",
        "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
        "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
        "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i",
        "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no", "nor",
        "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own",
        "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
        "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up",
        "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "whose", "why",
        "will", "with", "would", "you", "your", "yours", "name", "named",
    }
)


@dataclass(frozen=True)
class _Unit:
    index: int
    paragraph: int
    text: str


class LexicalReader:
    """Keeps the passages of a page that overlap most with the question and sub-question.

    Args:
        max_notes_chars: Size of the notes kept per page; documents no longer than this come back whole.
        segment_chars: Segment size, as for the browsing agent (pages are read segment by segment).
        max_segments: At most this many segments are scanned, which bounds the work on huge pages.
    """

    def __init__(self, max_notes_chars: int = 4000, segment_chars: int = 40960, max_segments: int = 16) -> None:
        for name, value in (("max_notes_chars", max_notes_chars), ("segment_chars", segment_chars)):
            if value < 100:
                raise ConfigError(f"LexicalReader {name} must be at least 100, got {value}")
        if max_segments < 1:
            raise ConfigError(f"LexicalReader max_segments must be at least 1, got {max_segments}")
        self.max_notes_chars = max_notes_chars
        self.segment_chars = segment_chars
        self.max_segments = max_segments

    async def read(
        self, doc: Document, *, question: str, subquestion: str, memory: EpisodeMemory
    ) -> PageNotes:
        """Select the relevant passages of ``doc`` and record them in ``memory``."""
        start = time.monotonic()
        notes = await asyncio.to_thread(self._read_sync, doc, question, subquestion)
        memory.add(doc.url, notes.notes)
        return PageNotes(
            url=notes.url,
            title=notes.title,
            notes=notes.notes,
            segments_read=notes.segments_read,
            segments_total=notes.segments_total,
            error=notes.error,
            elapsed_s=time.monotonic() - start,
        )

    def _read_sync(self, doc: Document, question: str, subquestion: str) -> PageNotes:
        content = doc.content.strip()
        if not content:
            return PageNotes(doc.url, doc.title, "", 0, 0, error="the page has no readable text")
        if len(content) <= self.max_notes_chars:
            return PageNotes(doc.url, doc.title, content, 1, 1)
        segments = segment_text(content, self.segment_chars)
        scanned = segments[: self.max_segments]
        text = "\n\n".join(scanned)
        notes = select_passages(text, f"{question}\n{subquestion}", self.max_notes_chars)
        return PageNotes(doc.url, doc.title, notes, len(scanned), len(segments))


def select_passages(text: str, query: str, max_chars: int) -> str:
    """The passages of ``text`` most relevant to ``query``, in document order, at most ``max_chars`` long.

    Deterministic: score = sum over distinct query terms in a passage of log(1 + N / df); ties go to the shorter,
    then the earlier passage. With no overlap at all the beginning of the text is returned (a lead paragraph
    is the best guess a reader without a model has).
    """
    if len(text) <= max_chars:
        return text
    query_terms = set(_terms(query))
    units = _units(text, max(200, max_chars // 4))
    unit_terms = [Counter(_terms(u.text)) for u in units]
    df = Counter(t for counts in unit_terms for t in counts if t in query_terms)
    idf = {t: math.log(1.0 + len(units) / n) for t, n in df.items()}
    scored = [(sum(idf[t] for t in counts if t in idf), u) for u, counts in zip(units, unit_terms)]
    ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], len(s[1].text), s[1].index))
    chosen: list[_Unit] = []
    used = 0
    for _, unit in ranked:
        cost = len(unit.text) + len(_GAP)
        if used + cost <= max_chars:
            chosen.append(unit)
            used += cost
    if not chosen:
        return segment_text(text, max_chars)[0].strip()[:max_chars]
    return _join(sorted(chosen, key=lambda u: u.index))


def _terms(text: str) -> list[str]:
    """Lower-cased content words, with a naive plural fold ("towers" -> "tower")."""
    out = []
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


def _units(text: str, max_unit_chars: int) -> list[_Unit]:
    """Paragraphs; a paragraph longer than ``max_unit_chars`` becomes its sentences (cut further if needed)."""
    units: list[_Unit] = []
    for p_index, paragraph in enumerate(_PARAGRAPH_BREAK.split(text)):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        pieces = [paragraph] if len(paragraph) <= max_unit_chars else _SENTENCE_END.split(paragraph)
        for piece in pieces:
            for part in segment_text(piece, max_unit_chars) if len(piece) > max_unit_chars else [piece]:
                if part.strip():
                    units.append(_Unit(len(units), p_index, part.strip()))
    return units


def _join(units: list[_Unit]) -> str:
    """Join in order: sentences of one paragraph by a space, paragraphs by a blank line, gaps marked."""
    parts = [units[0].text]
    for prev, unit in itertools.pairwise(units):
        if unit.index != prev.index + 1:
            parts.append(_GAP)
        elif unit.paragraph == prev.paragraph:
            parts.append(" ")
        else:
            parts.append("\n\n")
        parts.append(unit.text)
    return "".join(parts)
