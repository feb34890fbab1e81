"""The numeric observation of the discrete wrapper: a fixed layout of state and candidate features.

Layout (every value in [-1, 1], float32; see ``DiscreteResearchWrapper`` for the slot order):

1. Episode, ``GLOBAL_FEATURES`` values: turn / max_turns; 1 on the last turn (only an answer scores there);
   tanh(searches / 3); tanh(pages read / 3); latest results shown / browse slots; the latest observation was an
   error; the question itself was searched; yes/no question; the wanted span kind one-hot (date, number, name);
   candidate spans found / answer slots.
2. Per entity-query slot, ``QUERY_FEATURES``: valid; entity support / best support; entity seen in a page.
3. Per browse slot, ``BROWSE_FEATURES``: valid; already read; question overlap of the title; of the snippet.
4. Per answer slot, ``ANSWER_FEATURES``: valid; support / best support; tanh(support / 10); tanh(count / 3);
   best sentence overlap with the question; kind is the wanted kind; seen in a page; span words / 5 (capped);
   1 / (1 + best search rank it was seen at) (0 when unknown); it is the title of a result page.
5. The rest: the question's words and word bigrams, feature-hashed with signs (blake2b, so identical across
   processes and runs) and L2-normalised. It lets a policy tell question types apart.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence

import numpy as np

from drgym.wrappers._candidates import KINDS, SpanStats
from drgym.wrappers._parse import SearchHit
from drgym.wrappers._state import EpisodeState, span_is_title

__all__ = [
    "ANSWER_FEATURES",
    "BROWSE_FEATURES",
    "GLOBAL_FEATURES",
    "QUERY_FEATURES",
    "dense_size",
    "encode",
    "hashed_words",
]

GLOBAL_FEATURES = 12
QUERY_FEATURES = 3
BROWSE_FEATURES = 4
ANSWER_FEATURES = 10

_WORD = re.compile(r"\w+")


def dense_size(n_queries: int, n_results: int, n_candidates: int) -> int:
    """Number of features before the hashed block."""
    return (
        GLOBAL_FEATURES
        + QUERY_FEATURES * n_queries
        + BROWSE_FEATURES * n_results
        + ANSWER_FEATURES * n_candidates
    )


def hashed_words(text: str, dims: int) -> np.ndarray:
    """Signed feature hashing of the words and word bigrams of ``text``, L2-normalised (zeros if empty)."""
    out = np.zeros(dims, dtype=np.float64)
    if dims == 0:
        return out.astype(np.float32)
    words = _WORD.findall(text.lower())
    for token in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
        digest = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        out[digest % dims] += 1.0 if (digest >> 63) & 1 else -1.0
    norm = float(np.linalg.norm(out))
    return (out / norm if norm > 0 else out).astype(np.float32)


def encode(
    state: EpisodeState,
    *,
    entities: Sequence[SpanStats | None],
    results: Sequence[SearchHit | None],
    answers: Sequence[SpanStats | None],
    yes_no: bool,
    max_turns: int | None,
    n_features: int,
    question_hash: np.ndarray,
) -> np.ndarray:
    """The observation vector of ``state``; slot lists hold ``None`` where a slot is empty."""
    top = max((s.support for s in state.spans.ranked()[:1]), default=0.0) or 1.0
    wanted = state.spans.wanted
    values: list[float] = [
        min(1.0, state.turn / max_turns) if max_turns else math.tanh(state.turn / 5),
        1.0 if max_turns and state.turn == max_turns - 1 else 0.0,
        math.tanh(state.searches / 3),
        math.tanh(state.pages_read / 3),
        min(1.0, len(state.results) / max(1, len(results))),
        float(state.last_error),
        float(state.question.lower() in state.searched),
        float(yes_no),
        *(float(wanted == kind) for kind in KINDS),
        min(1.0, len(state.spans) / max(1, len(answers))),
    ]
    for entity in entities:
        values += (
            [0.0] * QUERY_FEATURES if entity is None else [1.0, entity.support / top, float(entity.in_page)]
        )
    for hit in results:
        if hit is None:
            values += [0.0] * BROWSE_FEATURES
        else:
            values += [
                1.0,
                float(hit.url in state.read_urls),
                state.overlap(hit.title),
                state.overlap(hit.snippet),
            ]
    for j, span in enumerate(answers):
        if span is None:
            values += [1.0 if yes_no and j < 2 else 0.0] + [0.0] * (ANSWER_FEATURES - 1)
            continue
        values += [
            1.0,
            span.support / top,
            math.tanh(span.support / 10),
            math.tanh(span.count / 3),
            span.best_overlap,
            float(span.kind == wanted),
            float(span.in_page),
            min(1.0, len(span.text.split()) / 5),
            1.0 / (1 + span.best_rank) if span.best_rank is not None else 0.0,
            float(span_is_title(state, span.text)),
        ]
    dense = np.asarray(values, dtype=np.float32)
    out = np.zeros(n_features, dtype=np.float32)
    out[: dense.size] = dense
    out[dense.size :] = question_hash
    return np.clip(out, -1.0, 1.0)
