"""The search backend interface shared by the local BM25 index, the live search APIs and replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from drgym.document import Document  # re-exported: it lived here before drgym.document

__all__ = ["Document", "Result", "SearchBackend"]


@dataclass(frozen=True)
class Result:
    """One search hit. ``extras`` carries provider-specific fields (date, position, score, source)."""

    title: str
    url: str
    snippet: str
    extras: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class SearchBackend(Protocol):
    """What the environment needs from a search engine.

    Implementations raise :class:`drgym.errors.ToolError` subclasses on failure (never return a sentinel) and
    may be shared by many concurrent episodes on one event loop.
    """

    name: str

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Return up to ``k`` results for ``query``, best first."""
        ...

    async def open(self, url: str) -> Document:
        """Return the readable document behind ``url`` (a local passage, or a fetched and extracted page)."""
        ...

    async def aclose(self) -> None:
        """Release sessions and files; safe to call twice."""
        ...
