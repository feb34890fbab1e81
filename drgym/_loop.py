"""A private background event loop that backs the environment's synchronous API.

``env.step`` must be callable from plain synchronous code (training scripts, ``check_env``, SB3) while the
tools underneath are coroutines that share aiohttp sessions. Running each call with ``asyncio.run`` would create
and destroy a loop per step and orphan those sessions, so synchronous calls are submitted to one long-lived loop
in a daemon thread instead. Async users never touch it: they ``await env.astep(...)`` on their own loop.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _ensure_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="drgym-loop", daemon=True)
            _thread.start()
            atexit.register(_shutdown)
        return _loop


def _shutdown() -> None:
    loop = _loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


def in_background_loop() -> bool:
    """True when called from the background loop's own thread (a sync call there would deadlock)."""
    return _thread is not None and threading.current_thread() is _thread


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and block until it finishes; exceptions propagate unchanged."""
    if in_background_loop():
        coro.close()
        raise RuntimeError("synchronous drgym call made from inside drgym's own event loop; use the async API")
    future = asyncio.run_coroutine_threadsafe(coro, _ensure_loop())
    return future.result()
