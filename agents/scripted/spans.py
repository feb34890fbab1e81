"""Answer-span selection for the scripted agent: pick the span of the read text best supported as an answer.

Deliberately simple and deterministic: sentences are scored by how many of the question's content words they
contain; candidate spans (capitalised names, dates, years and numbers) in the best sentences are scored by the
support of the sentences they occur in, with a bonus for the span type the question asks for. This is the floor
every learning agent must beat, not a reader model.
"""

from __future__ import annotations

import re
from collections import defaultdict

__all__ = ["best_span", "content_words", "is_yes_no"]

_STOP = frozenset(
    """a an the of in on at to for from by with and or but is are was were be been being do does did has have had
    what which who whom whose when where why how that this these those it its as than then there their they he she
    his her him i you we our your my me not no yes if so into about over after before under between during
    many much one first name named also same both either film year""".split()
)
_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(rf"\b(?:\d{{1,2}} (?:{_MONTHS}) \d{{4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{4}}|(?:{_MONTHS}) \d{{4}})\b")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|the|de|von|van|and|&)?\s*[A-Z][\w'’.-]*)*")
_STRUCTURE = re.compile(r"^\s*(?:Results for query|URL:|Page \d+:|</?tool_response>|Error:).*$", re.M)
_HEADING = re.compile(r"^\s*(?:#+|\d+\.)\s+(.+?)\s*$", re.M)
_YES_NO_START = re.compile(r"^(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.I)


def content_words(text: str) -> set[str]:
    """Lowercased words of ``text`` that carry meaning (stopwords removed)."""
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 1}


def is_yes_no(question: str) -> bool:
    """True for questions answered yes or no (they start with an auxiliary verb)."""
    return bool(_YES_NO_START.match(question.strip()))


_ROLE = re.compile(r"\b(?:is|was|are|were) (?:an?|the) (?:[A-Z][\w-]+ )*((?:[a-z][\w-]+ )?[a-z][\w-]+?)(?= who| and| of| from| in|[,.;])")


def _wanted_kind(question: str) -> str:
    q = question.lower()
    if re.search(r"\b(occupation|profession|job|genre)\b", q):
        return "role"
    if re.search(r"\b(when|what year|which year|what date|born on)\b", q):
        return "date"
    if re.search(r"\bhow (many|much|old|long|tall|far)\b", q):
        return "number"
    return "name"


def _candidates(sentence: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = [(m.group(0), "date") for m in _DATE.finditer(sentence)]
    found += [(m.group(0), "date") for m in _YEAR.finditer(sentence)]
    found += [(m.group(0).rstrip(".,"), "number") for m in _NUMBER.finditer(sentence)]
    found += [(m.group(0).strip().rstrip(".,"), "name") for m in _NAME.finditer(sentence)]
    found += [(m.group(1), "role") for m in _ROLE.finditer(sentence)]
    return [(span, kind) for span, kind in found if span]


def best_span(question: str, texts: list[str]) -> str | None:
    """The best-supported answer span for ``question`` in ``texts``, or ``None`` when nothing fits."""
    if is_yes_no(question):
        return "yes"
    q_words = content_words(question)
    if not q_words:
        return None
    wanted = _wanted_kind(question)
    scores: dict[str, float] = defaultdict(float)
    titles: set[str] = set()
    for text in texts:
        titles.update(m.group(1) for m in _HEADING.finditer(text))
        body = _HEADING.sub("", _STRUCTURE.sub("", text))  # result headers and titles are not evidence
        for sentence in _SENTENCE.split(body):
            overlap = len(q_words & content_words(sentence)) / len(q_words)
            if overlap == 0:
                continue
            for span, kind in _candidates(sentence):
                span_words = content_words(span)
                if not span_words or span_words <= q_words:
                    continue  # a span the question already names is not its answer
                bonus = (2.0 if kind == wanted else 1.0) * (1.5 if span in titles else 1.0)
                bonus *= 1.0 + 0.25 * min(len(span_words), 3)  # prefer full names over single words
                scores[span] += overlap * overlap * bonus
    if not scores:
        return None
    return max(sorted(scores), key=lambda s: (scores[s], -len(s)))
