"""Read the env's rendered tool results back into structure, as a text policy would.

The wrapper sees only what a policy sees: the observation text. ``drgym.protocol`` renders search results as
numbered ``title`` / ``URL:`` / snippet lines and browse results as ``Page i: title`` / ``URL:`` / notes blocks;
these parsers invert that rendering and ignore anything else (error lines, notes about skipped URLs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PageRead", "SearchHit", "parse_pages", "parse_search", "unwrap"]

_RESULT = re.compile(
    r"^\d+\. (?P<title>.*)\n   URL: (?P<url>\S+)[ \t]*(?:\n   (?!URL: )(?P<snippet>.*))?$", re.MULTILINE
)
_PAGE_HEAD = re.compile(r"^Page \d+(?:: (?P<title>.*))?\nURL: (?P<url>\S*)[ \t]*\n", re.MULTILINE)
_UNREADABLE = "Error: this page could not be read"
_OPEN, _CLOSE = "<tool_response>\n", "\n</tool_response>"


@dataclass(frozen=True)
class SearchHit:
    """One search result as shown to the policy."""

    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class PageRead:
    """One browsed page as shown to the policy; ``notes`` is empty when the page could not be read."""

    title: str
    url: str
    notes: str
    ok: bool


def unwrap(observation: str) -> str:
    """The tool result inside ``<tool_response>…</tool_response>`` (the text itself when not wrapped)."""
    if observation.startswith(_OPEN) and observation.endswith(_CLOSE):
        return observation[len(_OPEN) : -len(_CLOSE)]
    return observation


def parse_search(text: str) -> list[SearchHit]:
    """Search results in the order shown, first occurrence of each URL only."""
    hits: dict[str, SearchHit] = {}
    for m in _RESULT.finditer(text):
        url = m.group("url")
        if url not in hits:
            title = m.group("title").strip()
            hits[url] = SearchHit(
                "" if title == "(no title)" else title, url, (m.group("snippet") or "").strip()
            )
    return list(hits.values())


def parse_pages(text: str) -> list[PageRead]:
    """Browsed pages in the order shown, with their notes."""
    heads = list(_PAGE_HEAD.finditer(text))
    pages = []
    for i, head in enumerate(heads):
        stop = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = text[head.end() : stop].strip()
        ok = not body.startswith(_UNREADABLE)
        pages.append(PageRead((head.group("title") or "").strip(), head.group("url"), body if ok else "", ok))
    return pages
