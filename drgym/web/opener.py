"""Open a live URL as a readable ``Document``: the safe fetcher, then HTML → markdown extraction.

Live search backends read pages through this (their ``page_opener``), so every page the policy browses goes
through the SSRF guard, the size and type caps, and the same extraction, whichever search API found it.
"""

from __future__ import annotations

import asyncio

from drgym.search.base import Document
from drgym.web.extract import extract
from drgym.web.fetch import FetchConfig, Fetcher

__all__ = ["PageOpener"]

_MARKUP_TYPES = ("text/html", "application/xhtml+xml")


class PageOpener:
    """``await opener(url) -> Document``. One shared ``Fetcher`` (and its HTTP session) per opener."""

    def __init__(
        self,
        fetcher: Fetcher | None = None,
        *,
        config: FetchConfig | None = None,
        links: bool = False,
        max_html_chars: int = 2_000_000,
    ):
        """``max_html_chars`` bounds the CPU one page can cost: extraction of a page made of many small
        elements grows with its size, and the browse time budget ends the step but not a worker thread."""
        self.fetcher = fetcher if fetcher is not None else Fetcher(config)
        self.links = links
        self.max_html_chars = max_html_chars

    async def __call__(self, url: str) -> Document:
        page = await self.fetcher.fetch(url)
        if page.content_type in _MARKUP_TYPES or page.content_type.endswith("+xml") and "<html" in page.text[:2048]:
            html = page.text[: self.max_html_chars]
            content = await asyncio.to_thread(extract, html, page.url, links=self.links)
        else:
            content = page.text  # plain text, or text already extracted from a PDF
        title = _title_of(content) or page.url
        return Document(url=page.url, title=title, content=content, content_type="text/markdown", source=page.url)

    async def aclose(self) -> None:
        await self.fetcher.aclose()


def _title_of(markdown: str) -> str:
    for line in markdown.splitlines()[:20]:
        line = line.strip()
        if line.startswith("# "):
            return line[2:].strip()
    return ""
