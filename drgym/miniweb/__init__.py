"""The mini-web: a corpus served as a local website, so the live search-and-read path runs with no internet.

``MiniWebBackend`` starts the site on loopback and reaches it the way a live provider is reached: searches
through the SearxNG client, pages through the SSRF-guarded fetcher and the HTML extractor. ``create_app``
builds the site itself (an ``aiohttp`` application) for tests and tools that serve it their own way.
"""

from __future__ import annotations

from drgym.miniweb.backend import MiniWebBackend
from drgym.miniweb.render import article_path
from drgym.miniweb.site import MiniWiki, build_app, create_app

__all__ = ["MiniWebBackend", "MiniWiki", "article_path", "build_app", "create_app"]
