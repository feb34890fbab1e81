"""The event loops behind the environment's synchronous API, owned by whoever owns the tools (no module state).

``env.step`` must be callable from plain synchronous code (training scripts, ``check_env``, SB3) while the
tools underneath are coroutines that share aiohttp sessions. Running each call with ``asyncio.run`` would create
and destroy a loop per step and orphan those sessions, so a :class:`SyncRunner` keeps one long-lived loop per
calling thread and drives it with ``run_until_complete`` (no thread hop on the hot path). When the calling
thread already runs a loop (a notebook, an async app calling the sync API), the coroutine goes to the runner's
own loop in a daemon thread instead. Async users never touch either: they ``await env.astep(...)`` on their own
loop.

The runner belongs to a :class:`~drgym.services.ToolServices`; :meth:`SyncRunner.close` (called by its owner)
closes every loop it made, so nothing needs an ``atexit`` hook.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["SyncRunner"]

T = TypeVar("T")


class SyncRunner:
    """One private event loop per calling thread, plus one background loop for callers inside a running loop."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._background: asyncio.AbstractEventLoop | None = None
        self._background_thread: threading.Thread | None = None
        self._closed = False

    def _thread_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            with self._lock:
                self._check_open()
                loop = self._local.loop = asyncio.new_event_loop()
                self._loops.append(loop)
        return loop

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            self._check_open()
            thread = self._background_thread
            if self._background is None or self._background.is_closed() or thread is None or not thread.is_alive():
                self._background = asyncio.new_event_loop()
                self._background_thread = threading.Thread(
                    target=self._background.run_forever, name="drgym-loop", daemon=True
                )
                self._background_thread.start()
            return self._background

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this ToolServices is closed; build a new one (or an env without services=)")

    def in_background_loop(self) -> bool:
        """True when called from this runner's background loop thread (a sync call there would deadlock)."""
        return self._background_thread is not None and threading.current_thread() is self._background_thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion from synchronous code; exceptions propagate unchanged."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                loop = self._thread_loop()
            except RuntimeError:
                coro.close()
                raise
            return loop.run_until_complete(coro)
        if self.in_background_loop():
            coro.close()
            raise RuntimeError("synchronous drgym call made from inside drgym's own event loop; use the async API")
        try:
            loop = self._background_loop()
        except RuntimeError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def loops(self) -> list[asyncio.AbstractEventLoop]:
        """The open loops this runner made (thread loops and the background loop)."""
        with self._lock:
            found = [lp for lp in self._loops if not lp.is_closed()]
            if self._background is not None and not self._background.is_closed():
                found.append(self._background)
            return found

    def close(self, finish: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``finish()`` on every loop this runner made (e.g. to close the sessions made there), then close them.

        A loop another thread is running right now is left to that thread (it is closed once idle and
        unreferenced); calling this from inside a running loop skips the idle thread loops' ``finish``.
        """
        with self._lock:
            self._closed = True
            thread_loops, self._loops = self._loops, []
            background, thread = self._background, self._background_thread
            self._background = self._background_thread = None
        if background is not None and not background.is_closed():
            if thread is not None and thread.is_alive():
                asyncio.run_coroutine_threadsafe(_finish_and_drain(finish), background).result(timeout=30)
                background.call_soon_threadsafe(background.stop)
                thread.join(timeout=30)
            if not background.is_running():
                background.close()
        try:
            asyncio.get_running_loop()
            inside = True
        except RuntimeError:
            inside = False
        for loop in thread_loops:
            if loop.is_closed() or loop.is_running():
                continue
            if not inside:
                loop.run_until_complete(_finish_and_drain(finish))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def _finish_and_drain(finish: Callable[[], Coroutine[Any, Any, None]] | None) -> None:
    """``finish()``, then wait for the loop's other tasks (sessions closing), so the loop can close cleanly."""
    if finish is not None:
        await finish()
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=10)
