"""Search backends: one interface for the local BM25 index, live search APIs and replay."""

from drgym.document import Document
from drgym.search.base import Result, SearchBackend
from drgym.search.registry import BACKENDS, backend_names, close_shared_backends, make_backend, shared_backend

__all__ = [
    "BACKENDS",
    "Document",
    "Result",
    "SearchBackend",
    "backend_names",
    "close_shared_backends",
    "make_backend",
    "shared_backend",
]
