"""Search backends by name, so ``make(..., search="serper")`` and ``drgym search --backend`` share one table.

Entry points are strings (``"module:attr"``) imported on first use, so naming a backend never imports the
others' dependencies. Sharing a backend (one BM25 index, one HTTP session per provider for many envs) is the
job of a :class:`~drgym.services.ToolServices` (``services.backend("local", name="demo")``), not of this module.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from drgym.errors import ConfigError
from drgym.search.base import SearchBackend

__all__ = ["BACKENDS", "backend_factory", "backend_names", "make_backend"]

BACKENDS: dict[str, str] = {
    "local": "drgym.search.local:BM25Backend.from_corpus",
    "serper": "drgym.search.serper:SerperBackend",
    "brave": "drgym.search.brave:BraveBackend",
    "tavily": "drgym.search.tavily:TavilyBackend",
    "searxng": "drgym.search.searxng:SearxngBackend",
    "miniweb": "drgym.miniweb.backend:MiniWebBackend",
}
"""Backend name → ``"module:factory"``. Add to it (or pass an instance) to plug in your own."""

def backend_names() -> list[str]:
    """The names ``make_backend`` accepts."""
    return sorted(BACKENDS)


def _resolve(target: str) -> Callable[..., SearchBackend]:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def backend_factory(name: str) -> Callable[..., SearchBackend]:
    """The class (or factory) registered as ``name``; unknown names raise ``ConfigError`` listing the valid ones."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"unknown search backend `{name}`; valid backends: {', '.join(backend_names())}.{hint}")
    return _resolve(BACKENDS[name])


def make_backend(name: str, /, **kwargs: Any) -> SearchBackend:
    """Build a new backend by name; unknown names raise ``ConfigError`` listing the valid ones."""
    return backend_factory(name)(**kwargs)
