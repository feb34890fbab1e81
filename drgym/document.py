"""The readable document behind a URL: what search backends open, the fetcher extracts and readers read.

It lives outside ``drgym.search`` because ``web/`` and ``browse/`` use it too, and neither depends on search.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Document"]


@dataclass(frozen=True)
class Document:
    """A readable document behind a URL, already converted to text/markdown for the reader.

    ``content`` is plain text or markdown (never raw HTML); ``source`` is attribution (e.g. the corpus name).
    """

    url: str
    title: str
    content: str
    content_type: str = "text/markdown"
    source: str = ""
