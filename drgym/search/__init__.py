"""Search backends: one interface for the local BM25 index, live search APIs and replay."""

from drgym.document import Document
from drgym.search.base import Result, SearchBackend
from drgym.search.episode import Episode, EpisodeView
from drgym.search.registry import BACKENDS, backend_names, make_backend

__all__ = [
    "BACKENDS",
    "Document",
    "Episode",
    "EpisodeView",
    "Result",
    "SearchBackend",
    "backend_names",
    "make_backend",
]
