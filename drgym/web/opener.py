"""Open a live URL as a readable ``Document``: the safe fetcher, then HTML → markdown extraction.

Live search backends read pages through this (their ``page_opener``), so every page the policy browses goes
through the SSRF guard, the size and type caps, and the same extraction, whichever search API found it.
Extraction (and a PDF's text) runs in an :class:`~drgym.web.isolation.IsolatedPool` of worker processes, never
on asyncio's default thread pool: a page that is slow to parse is stopped when its time is up (the browse
budget cancels the read, or the pool's own limit passes) and cannot hold up the cache, the search or other
episodes.
"""

from __future__ import annotations

from drgym.document import Document
from drgym.web.extract import extract
from drgym.web.fetch import FetchConfig, Fetcher
from drgym.web.isolation import IsolatedPool

__all__ = ["PageOpener"]

_MARKUP_TYPES = ("text/html", "application/xhtml+xml")


class PageOpener:
    """``await opener(url) -> Document``. One shared ``Fetcher`` (and its HTTP session) per opener.

    Args:
        fetcher: The fetcher to use (default: a new one with ``config``, extracting PDFs in ``pool``).
        config: Limits of the default fetcher.
        links: Keep hyperlinks as markdown links.
        max_html_chars: Longest HTML handed to the extractor; the rest of a huge page is dropped.
        pool: Worker processes that run extraction. Without one the opener makes its own (two workers) and
            closes it in :meth:`aclose`; a pool passed in belongs to the caller, who closes it.
    """

    def __init__(
        self,
        fetcher: Fetcher | None = None,
        *,
        config: FetchConfig | None = None,
        links: bool = False,
        max_html_chars: int = 2_000_000,
        pool: IsolatedPool | None = None,
    ):
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else IsolatedPool()
        self.fetcher = fetcher if fetcher is not None else Fetcher(config, pool=self.pool)
        self.links = links
        self.max_html_chars = max_html_chars

    async def __call__(self, url: str) -> Document:
        self.pool.start()  # a no-op once started; the first time, the workers start while the page downloads
        page = await self.fetcher.fetch(url)
        if page.content_type in _MARKUP_TYPES or page.content_type.endswith("+xml") and "<html" in page.text[:2048]:
            html = page.text[: self.max_html_chars]
            content = await self.pool.run(extract, html, page.url, links=self.links)
        else:
            content = page.text  # plain text, or text already extracted from a PDF
        title = _title_of(content) or page.url
        return Document(url=page.url, title=title, content=content, content_type="text/markdown", source=page.url)

    async def aclose(self) -> None:
        """Close the fetcher's sessions, and the pool when the opener made it."""
        await self.fetcher.aclose()
        if self._owns_pool:
            self.pool.close()


def _title_of(markdown: str) -> str:
    for line in markdown.splitlines()[:20]:
        line = line.strip()
        if line.startswith("# "):
            return line[2:].strip()
    return ""
