"""The mini-web: a corpus served as a local website, so the live search-and-read path runs with no internet.

``MiniWebBackend`` starts the site on loopback and reaches it the way a live provider is reached: searches
through the SearxNG (or Serper) client, pages through the SSRF-guarded fetcher and the HTML extractor.
``create_app`` builds the site itself (an ``aiohttp`` application) for tests and tools that serve it their own
way; ``serve`` runs it as a standalone server (``drgym miniweb serve``). ``FaultConfig`` adds latency and
faults.
"""

from __future__ import annotations

from drgym.miniweb.backend import MiniWebBackend
from drgym.miniweb.faults import FAULT_KINDS, FaultConfig
from drgym.miniweb.render import article_path
from drgym.miniweb.serve import serve
from drgym.miniweb.site import MiniWiki, build_app, create_app, load_wiki

__all__ = [
    "FAULT_KINDS",
    "FaultConfig",
    "MiniWebBackend",
    "MiniWiki",
    "article_path",
    "build_app",
    "create_app",
    "load_wiki",
    "serve",
]
