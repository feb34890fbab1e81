"""The ``browse_webpage`` tool's orchestration: open pages, read them concurrently, within bounds.

Every failure becomes the page's :attr:`PageNotes.error` (a fetch fault, a refused URL, a model failure, the
time budget, an unexpected bug, which is also logged): one bad page never costs the other pages of the call, and
an episode never dies of a network fault.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from drgym.browse.base import PageNotes, Reader
from drgym.browse.memory import EpisodeMemory
from drgym.document import Document
from drgym.errors import ConfigError, DrgymError
from drgym.search.base import SearchBackend

__all__ = ["Browser"]

logger = logging.getLogger(__name__)


class Browser:
    """Opens URLs through a search backend and reads them with a reader.

    Args:
        backend: Where documents come from (``backend.open(url)``).
        reader: Turns a document into notes (:class:`~drgym.browse.lexical.LexicalReader`,
            :class:`~drgym.browse.agent.BrowsingAgent`).
        max_pages_per_call: URLs read per call after de-duplication; the rest come back as skipped.
        time_budget_s: Wall-clock limit per page, opening and reading together (time spent waiting for a
            free extraction worker counts). A page past it is cancelled, which stops its work (an isolated
            extraction worker is killed), and comes back with the notes kept so far and an error.
        max_concurrency: Pages read at the same time within one call. A page's budget starts when its turn
            comes, so a call returns within ``ceil(pages / max_concurrency) * time_budget_s``: a call of 5
            pages, 4 at a time, can take twice the budget.
    """

    def __init__(
        self,
        backend: SearchBackend,
        reader: Reader,
        *,
        max_pages_per_call: int = 5,
        time_budget_s: float = 60.0,
        max_concurrency: int = 4,
    ) -> None:
        if max_pages_per_call < 1:
            raise ConfigError(f"Browser max_pages_per_call must be at least 1, got {max_pages_per_call}")
        if not time_budget_s > 0:
            raise ConfigError(f"Browser time_budget_s must be positive, got {time_budget_s!r}")
        if max_concurrency < 1:
            raise ConfigError(f"Browser max_concurrency must be at least 1, got {max_concurrency}")
        self.backend = backend
        self.reader = reader
        self.max_pages_per_call = max_pages_per_call
        self.time_budget_s = time_budget_s
        self.max_concurrency = max_concurrency

    async def browse(
        self,
        urls: Sequence[str],
        *,
        question: str,
        subquestions: Mapping[str, str],
        memory: EpisodeMemory,
    ) -> list[PageNotes]:
        """Read ``urls`` (duplicates dropped, order kept) and return one :class:`PageNotes` per distinct URL.

        Args:
            urls: The URLs the policy asked for (already filtered to this episode's search results).
            question: The user question.
            subquestions: For each URL, the search query that surfaced it ("" when unknown).
            memory: This episode's memory; readers add their notes to it.
        """
        unique = list(dict.fromkeys(url.strip() for url in urls))
        chosen, skipped = unique[: self.max_pages_per_call], unique[self.max_pages_per_call :]
        # One semaphore per call: asyncio primitives bind to the running loop, and the env may run on several.
        limit = asyncio.Semaphore(self.max_concurrency)
        pages = await asyncio.gather(
            *(self._browse_one(url, question, subquestions.get(url, ""), memory, limit) for url in chosen)
        )
        note = f"skipped: at most {self.max_pages_per_call} pages are read per call"
        return [*pages, *(PageNotes(url, "", "", 0, 0, error=note) for url in skipped)]

    async def _browse_one(
        self, url: str, question: str, subquestion: str, memory: EpisodeMemory, limit: asyncio.Semaphore
    ) -> PageNotes:
        if not url:
            return PageNotes(url, "", "", 0, 0, error="empty URL")
        async with limit:
            start = time.monotonic()
            mark = memory.mark()
            opened: list[Document] = []
            try:
                notes = await asyncio.wait_for(
                    self._open_and_read(url, question, subquestion, memory, opened, mark), self.time_budget_s
                )
            except asyncio.TimeoutError:  # _open_and_read catches everything else, so this is our own limit
                notes = _partial(url, opened, memory, mark, _budget_message(self.time_budget_s))
            return replace(notes, url=url, elapsed_s=time.monotonic() - start)

    async def _open_and_read(
        self,
        url: str,
        question: str,
        subquestion: str,
        memory: EpisodeMemory,
        opened: list[Document],
        mark: int,
    ) -> PageNotes:
        try:
            doc = await self.backend.open(url)
            opened.append(doc)
            return await self.reader.read(doc, question=question, subquestion=subquestion, memory=memory)
        except DrgymError as exc:  # ToolError (fetch, refused URL, replay miss...), LLMError
            return _partial(url, opened, memory, mark, str(exc) or type(exc).__name__)
        except Exception as exc:
            logger.warning("reading %s failed unexpectedly", url, exc_info=True)
            return _partial(url, opened, memory, mark, f"unexpected error while reading the page: {exc!r}")


def _partial(url: str, opened: list[Document], memory: EpisodeMemory, mark: int, error: str) -> PageNotes:
    """Notes for a page whose reading failed: whatever the reader had recorded in memory before it failed."""
    if not opened:
        return PageNotes(url, "", "", 0, 0, error=error)
    doc = opened[0]
    return PageNotes(url, doc.title, memory.notes_for(doc.url, since=mark), 0, 0, error=error)


def _budget_message(budget_s: float) -> str:
    return f"timed out after {budget_s:g}s (the time budget per page); reading the page was stopped"
