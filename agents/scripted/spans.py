"""Answer-span selection for the scripted agent: pick the span of the read text best supported as an answer.

Deliberately simple and deterministic: sentences are scored by the share of the question's content words they
contain; candidate spans (``drgym.answer_spans``) in those sentences are scored by that support, with a bonus for
the span kind the question asks for, for result titles and for multi-word names. This is the floor every
learning agent must beat, not a reader model.
"""

from __future__ import annotations

import re
from collections import defaultdict

from drgym.answer_spans import SENTENCE, content_words, is_yes_no, span_candidates, wanted_kind

__all__ = ["best_span"]

_STRUCTURE = re.compile(r"^\s*(?:Results for query|URL:|Page \d+:|</?tool_response>|Error:).*$", re.MULTILINE)
_HEADING = re.compile(r"^\s*(?:#+|\d+\.)\s+(.+?)\s*$", re.MULTILINE)


def best_span(question: str, texts: list[str]) -> str | None:
    """The best-supported answer span for ``question`` in ``texts``, or ``None`` when nothing fits."""
    if is_yes_no(question):
        return "yes"
    q_words = content_words(question)
    if not q_words:
        return None
    wanted = wanted_kind(question)
    scores: dict[str, float] = defaultdict(float)
    titles: set[str] = set()
    for text in texts:
        titles.update(m.group(1) for m in _HEADING.finditer(text))
        body = _HEADING.sub("", _STRUCTURE.sub("", text))  # result headers and titles are not evidence
        for sentence in SENTENCE.split(body):
            overlap = len(q_words & content_words(sentence)) / len(q_words)
            if overlap == 0:
                continue
            for span, kind in span_candidates(sentence):
                span_words = content_words(span)
                if not span_words or span_words <= q_words:
                    continue  # a span the question already names is not its answer
                bonus = (2.0 if kind == wanted else 1.0) * (1.5 if span in titles else 1.0)
                bonus *= 1.0 + 0.25 * min(len(span_words), 3)  # prefer full names over single words
                scores[span] += overlap * overlap * bonus
    if not scores:
        return None
    return max(sorted(scores), key=lambda s: (scores[s], -len(s)))
