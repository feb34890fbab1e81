"""What a page reader returns, and the interface every reader implements."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from drgym.browse.memory import EpisodeMemory
    from drgym.document import Document

__all__ = ["PageNotes", "Reader"]


@dataclass(frozen=True)
class PageNotes:
    """The information one reader kept from one page.

    Attributes:
        url: The URL as the policy asked for it (not the post-redirect one), so the caller can match it.
        title: The page title, or ``""`` when the page could not be opened.
        notes: The relevant text kept from the page; may be partial when ``error`` is set.
        segments_read: How many segments the reader went through.
        segments_total: How many segments the page has (``0`` when it could not be opened).
        error: Why reading failed or stopped early (fetch fault, model failure, time budget, skipped), else None.
        elapsed_s: Wall-clock seconds spent on the page.
    """

    url: str
    title: str
    notes: str
    segments_read: int
    segments_total: int
    error: str | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for ``info`` dicts and episode logs."""
        return dataclasses.asdict(self)


@runtime_checkable
class Reader(Protocol):
    """Reads one opened document with a question in mind and keeps what is relevant.

    A reader records what it kept in ``memory`` (so later pages see it as "gathered so far") and reports
    recoverable problems in :attr:`PageNotes.error` rather than raising.
    """

    async def read(
        self, doc: Document, *, question: str, subquestion: str, memory: EpisodeMemory
    ) -> PageNotes:
        """Return the notes kept from ``doc`` for ``question`` (``subquestion``: the query that found it)."""
        ...
