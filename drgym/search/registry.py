"""Search backends by name, so ``make(..., search="serper")`` and ``drgym search --backend`` share one table.

Entry points are strings (``"module:attr"``) imported on first use, so naming a backend never imports the
others' dependencies. Backends are shared per process: many episodes (and env copies) reuse one BM25 index and
one HTTP session per provider.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable
from typing import Any

from drgym.errors import ConfigError
from drgym.search.base import SearchBackend

__all__ = ["BACKENDS", "backend_names", "close_shared_backends", "make_backend", "shared_backend"]

BACKENDS: dict[str, str] = {
    "local": "drgym.search.local:BM25Backend.from_corpus",
    "serper": "drgym.search.serper:SerperBackend",
    "brave": "drgym.search.brave:BraveBackend",
    "tavily": "drgym.search.tavily:TavilyBackend",
    "searxng": "drgym.search.searxng:SearxngBackend",
    "miniweb": "drgym.miniweb.backend:MiniWebBackend",
}
"""Backend name → ``"module:factory"``. Add to it (or pass an instance) to plug in your own."""

_shared: dict[tuple[str, str], SearchBackend] = {}
_shared_lock = threading.Lock()


def backend_names() -> list[str]:
    """The names ``make_backend`` accepts."""
    return sorted(BACKENDS)


def _resolve(target: str) -> Callable[..., SearchBackend]:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def make_backend(name: str, /, **kwargs: Any) -> SearchBackend:
    """Build a new backend by name; unknown names raise ``ConfigError`` listing the valid ones."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"unknown search backend `{name}`; valid backends: {', '.join(backend_names())}.{hint}")
    return _resolve(BACKENDS[name])(**kwargs)


def shared_backend(name: str, /, **kwargs: Any) -> SearchBackend:
    """Return the process-wide backend for ``(name, kwargs)``, building it once."""
    key = (name, repr(sorted(kwargs.items())))
    with _shared_lock:
        backend = _shared.get(key)
        if backend is None:
            backend = make_backend(name, **kwargs)
            _shared[key] = backend
        return backend


async def close_shared_backends() -> None:
    """Close every shared backend and search stack (end of a program or a test)."""
    from drgym.search.stack import close_stacks

    await close_stacks()
    with _shared_lock:
        backends = list(_shared.values())
        _shared.clear()
    for backend in backends:
        await backend.aclose()
