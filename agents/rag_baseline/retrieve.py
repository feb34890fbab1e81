"""Passages for a question, outside the agent loop, as the paper's CoT + RAG baseline retrieves them.

The retriever queries the same search backend the environment uses (for ``search="local"``, the BM25 index of
the :class:`~drgym.services.ToolServices` the env was given, so nothing is indexed twice), takes the
passages' full text where the backend holds it (the local corpus) and the snippet otherwise, and optionally
re-ranks BM25's top candidates by MiniLM embedding similarity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from drgym.errors import ConfigError
from drgym.search import Result, SearchBackend
from drgym.services import ToolServices

__all__ = ["RETRIEVALS", "RetrievedPassage", "Retriever", "default_corpus", "resolve_backend"]

RETRIEVALS = ("bm25", "dense", "none")
"""``bm25``: the backend's ranking; ``dense``: its top candidates re-ranked by MiniLM; ``none``: none."""


@dataclass(frozen=True)
class RetrievedPassage:
    """One passage shown to the model."""

    title: str
    url: str
    text: str
    score: float


def default_corpus(info: Mapping[str, Any]) -> str:
    """The local corpus the environment searches for this episode: ``info["corpus"]`` when the environment
    states it, else its default rule (``demo`` for the demo questions, ``wiki-local`` otherwise)."""
    if isinstance(info.get("corpus"), str) and info["corpus"]:
        return info["corpus"]
    demo = info.get("source") == "demo" or str(info.get("record_id", "")).startswith("demo:")
    return "demo" if demo else "wiki-local"


class Retriever:
    """Top-``k`` passages for a question from a search backend.

    Args:
        k: Passages returned.
        mode: One of :data:`RETRIEVALS`.
        candidates: With ``dense``, how many BM25 results are re-ranked.
        passage_chars: Each passage is cut (at a space) to about this many characters.
        device: Device of the embedding model (``dense``); None: CUDA when available.
        embedder: The ``Embedder`` to use (shared by several retrievers); default: one loaded on first use.
    """

    def __init__(
        self, *, k: int = 5, mode: str = "bm25", candidates: int = 30, passage_chars: int = 1500,
        device: str | None = None, embedder: Any = None,
    ) -> None:
        if mode not in RETRIEVALS:
            raise ConfigError(f"retrieval must be one of {', '.join(map(repr, RETRIEVALS))}, got {mode!r}")
        for name, value in (("k", k), ("candidates", candidates), ("passage_chars", passage_chars)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.k, self.mode, self.candidates = k, mode, max(candidates, k)
        self.passage_chars = passage_chars
        self.device = device
        self.embedder = embedder

    async def retrieve(self, backend: SearchBackend, question: str) -> list[RetrievedPassage]:
        """The passages for ``question``, best first.

        Raises:
            ToolError: The backend failed (after its own retries).
        """
        if self.mode == "none":
            return []
        wanted = self.candidates if self.mode == "dense" else self.k
        results = await backend.search(question, wanted)
        passages = [self._passage(backend, r) for r in results]
        passages = [p for p in passages if p.text.strip()]
        if self.mode == "dense" and len(passages) > 1:
            passages = await self._rerank(question, passages)
        return passages[: self.k]

    def _passage(self, backend: SearchBackend, result: Result) -> RetrievedPassage:
        text = result.snippet
        passage_id = result.extras.get("passage_id")
        get_passage = getattr(backend, "get_passage", None)
        if passage_id is not None and callable(get_passage):
            try:
                text = get_passage(passage_id).text
            except KeyError:
                pass
        score = result.extras.get("score")
        return RetrievedPassage(
            title=result.title,
            url=result.url,
            text=_cut(" ".join(text.split()), self.passage_chars),
            score=float(score) if isinstance(score, (int, float)) else 0.0,
        )

    async def _rerank(self, question: str, passages: list[RetrievedPassage]) -> list[RetrievedPassage]:
        from .embed import load_embedder

        if self.embedder is None:
            self.embedder = await asyncio.to_thread(load_embedder, self.device)
        vectors = await self.embedder.aencode([question, *(f"{p.title}. {p.text}" for p in passages)])
        similarity = vectors[1:] @ vectors[0]  # (n,) cosine: the vectors are unit length
        order = np.argsort(-similarity, kind="stable")
        return [
            RetrievedPassage(passages[i].title, passages[i].url, passages[i].text, float(similarity[i]))
            for i in order
        ]


async def resolve_backend(
    search: str | SearchBackend, corpus: str | None, kwargs: Mapping[str, Any], services: ToolServices
) -> SearchBackend:
    """The backend instance: given, or ``services``' one, which an env given them uses too (built in a thread)."""
    if not isinstance(search, str):
        if not isinstance(search, SearchBackend):
            raise ConfigError(
                f"search must be a backend name or a SearchBackend, got {type(search).__name__}"
            )
        return search
    options = dict(kwargs)
    if search == "local" and corpus is not None:
        options.setdefault("name", corpus)
    return await asyncio.to_thread(services.backend, search, **options)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit)
    return text[: space if space > limit // 2 else limit].rstrip() + " …"
