"""Candidate answer spans in text: the shared primitives of the scripted agent and the discrete wrapper.

A span is a capitalised name, a date, a year, a number, or (for occupation-like questions) the role noun in
"X is an American politician". Deterministic and dependency-free; a floor for learning agents, not a reader.
"""

from __future__ import annotations

import functools
import re

__all__ = ["SENTENCE", "content_words", "is_yes_no", "span_candidates", "wanted_kind"]

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
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
"""Splits text into sentences (and lines)."""
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"\b(?:\d{{1,2}} (?:{_MONTHS}) \d{{4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{4}}|(?:{_MONTHS}) \d{{4}})\b"
)
_YEAR = re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|the|de|von|van|and|&)?\s*[A-Z][\w'’.-]*)*")
_ROLE = re.compile(
    r"\b(?:is|was|are|were) (?:an?|the) (?:[A-Z][\w-]+ )*((?:[a-z][\w-]+ )?[a-z][\w-]+?)(?= who| and| of| from| in|[,.;])"
)
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
    """The span kind a question asks for: ``role``, ``date``, ``number`` or ``name``."""
    q = question.lower()
    if re.search(r"\b(?:occupation|profession|job|genre)\b", q):
        return "role"
    if re.search(r"\b(?:when|what year|which year|what date|born on)\b", q):
        return "date"
    if re.search(r"\bhow (?:many|much|old|long|tall|far)\b|\b(?:population|number of)\b", q):
        return "number"
    return "name"


def span_candidates(sentence: str) -> list[tuple[str, str]]:
    """Candidate spans of a sentence with their kinds (``date``, ``number``, ``name``, ``role``)."""
    found: list[tuple[str, str]] = [(m.group(0), "date") for m in _DATE.finditer(sentence)]
    found += [(m.group(0), "date") for m in _YEAR.finditer(sentence)]
    found += [(m.group(0).rstrip(".,"), "number") for m in _NUMBER.finditer(sentence)]
    found += [(m.group(0).strip().rstrip(".,"), "name") for m in _NAME.finditer(sentence)]
    found += [(m.group(1), "role") for m in _ROLE.finditer(sentence)]
    return [(span, kind) for span, kind in found if span and len(span) <= _MAX_SPAN_CHARS]
