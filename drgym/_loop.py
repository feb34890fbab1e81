"""The event loops behind the environment's synchronous API.

``env.step`` must be callable from plain synchronous code (training scripts, ``check_env``, SB3) while the
tools underneath are coroutines that share aiohttp sessions. Running each call with ``asyncio.run`` would create
and destroy a loop per step and orphan those sessions, so each thread gets one long-lived loop that
``run_sync`` drives with ``run_until_complete`` (no thread hop on the hot path). When the calling thread already
runs a loop (a notebook, an async app calling the sync API), the coroutine goes to one shared loop in a daemon
thread instead. Async users never touch either: they ``await env.astep(...)`` on their own loop.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

"""True inside a ``run_sync`` call on this thread's private loop: nothing else waits on that loop."""

_local = threading.local()
_lock = threading.Lock()
_background: asyncio.AbstractEventLoop | None = None
_background_thread: threading.Thread | None = None


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
        if threading.current_thread() is threading.main_thread():
            atexit.register(_close_on_exit, loop)
    return loop


def _close_on_exit(loop: asyncio.AbstractEventLoop) -> None:
    """Close the shared search stacks (HTTP sessions, stores, local servers) the sync API opened on ``loop``,
    so a script that never closes them exits without "Unclosed client session" warnings."""
    if loop.is_closed() or loop.is_running():
        return
    from drgym.search.registry import close_shared_backends

    try:
        loop.run_until_complete(close_shared_backends())
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:
        logging.getLogger(__name__).debug("closing drgym's search stacks at exit failed", exc_info=True)
    finally:
        loop.close()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _background, _background_thread
    with _lock:
        if _background is None or _background.is_closed() or not _background_thread.is_alive():  # type: ignore[union-attr]
            _background = asyncio.new_event_loop()
            _background_thread = threading.Thread(target=_background.run_forever, name="drgym-loop", daemon=True)
            _background_thread.start()
        return _background


def in_background_loop() -> bool:
    """True when called from the shared background loop's own thread (a sync call there would deadlock)."""
    return _background_thread is not None and threading.current_thread() is _background_thread


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code; exceptions propagate unchanged."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _thread_loop().run_until_complete(coro)
    if in_background_loop():
        coro.close()
        raise RuntimeError("synchronous drgym call made from inside drgym's own event loop; use the async API")
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result()

