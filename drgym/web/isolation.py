"""Run CPU-heavy page work (HTML and PDF extraction) in a few child processes that can be stopped.

Why processes: libxml2's cost on hostile markup is superlinear (80k attributes on one element took 17.5 s), and
a thread cannot be stopped. On asyncio's default thread pool such a page held a thread long after the browse
budget had ended the step, starving the SQLite cache and BM25 calls that share that pool, and process exit
waited for it. An :class:`IsolatedPool` runs each call in one of ``workers`` child processes; a call that passes
its time limit, or whose caller gives up (the browse budget cancels it), has its process killed and a fresh one
started in its place. So abandoned work stops at once, costs no thread of the default pool, and never holds up
the store, the search or other episodes.

The pool belongs to whoever made it (a :class:`~drgym.web.opener.PageOpener`, a mini-web backend): pass it
explicitly, and :meth:`IsolatedPool.close` it when done. It is not bound to an event loop: calls from several
loops (the env's sync API and async callers) share its workers. Each worker is fed by one daemon thread of the
pool that blocks on the worker's pipe (never the event loop), and a worker exits by itself when its parent
process is gone, so nothing waits for abandoned work at exit.

Example::

    pool = IsolatedPool(workers=2, time_limit_s=20)
    markdown = await pool.run(extract, html, url)
    pool.close()
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from drgym.errors import ConfigError, FetchError

__all__ = ["IsolatedPool", "WorkTimeoutError", "WorkerCrashedError"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HEADER = struct.Struct("!I")
_START_TIMEOUT_S = 120.0  # a loaded machine can take seconds to start an interpreter and import lxml
_WORKER_SCRIPT = str(Path(__file__).resolve().with_name("_isolation_worker.py"))
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the drgym package
_names = itertools.count(1)


class WorkTimeoutError(FetchError):
    """A call passed its time limit; its worker process was killed and replaced."""


class WorkerCrashedError(FetchError):
    """A worker process died during a call (crash, memory limit, killed from outside) and was replaced."""


class _Worker:
    """One child process and its pipes; used by one feeding thread at a time."""

    def __init__(self, preload: Sequence[str], max_memory_bytes: int | None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH", "")]))
        env["DRGYM_WORKER_MAX_BYTES"] = str(max_memory_bytes or 0)
        self.proc = subprocess.Popen(
            [sys.executable, _WORKER_SCRIPT, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin
        self._out = self.proc.stdout.fileno()
        ready = self.receive(time.monotonic() + _START_TIMEOUT_S)
        if ready != b"ready":
            self.kill()
            raise WorkerCrashedError(f"an isolated worker failed to start (it answered {ready[:80]!r})")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Stop the process now (SIGKILL: a parse in C code ignores anything gentler) and reap it."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:  # already gone
                pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            logger.warning("isolated worker %d did not exit after SIGKILL", self.proc.pid)

    def send(self, payload: bytes) -> None:
        self._in.write(_HEADER.pack(len(payload)) + payload)
        self._in.flush()

    def receive(self, deadline: float) -> bytes:
        """One framed reply; raises ``TimeoutError`` at ``deadline`` and ``EOFError`` when the process died."""
        (size,) = _HEADER.unpack(self._read(_HEADER.size, deadline))
        return self._read(size, deadline)

    def _read(self, size: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        left = size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            try:
                ready, _, _ = select.select([self._out], [], [], wait)
            except (OSError, ValueError) as exc:  # the pipe was closed by kill() from another thread
                raise EOFError from exc
            if not ready:
                raise TimeoutError
            try:
                chunk = os.read(self._out, min(left, 1 << 20))
            except OSError as exc:
                raise EOFError from exc
            if not chunk:
                raise EOFError
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)


class _Call:
    """One queued or running call; ``abandon`` (from any thread) kills the worker that runs it."""

    def __init__(self, func: Callable[..., Any], args: tuple, kwargs: dict, limit: float) -> None:
        self.payload = pickle.dumps((func, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        self.name = getattr(func, "__qualname__", repr(func))
        self.limit = limit
        self.future: Future[Any] = Future()
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self.abandoned = False

    def attach(self, worker: _Worker | None) -> bool:
        """Record the worker running this call; False when the caller has already given up."""
        with self._lock:
            self._worker = worker
            return not self.abandoned

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            worker = self._worker
        self.future.cancel()  # a call still queued is dropped without running
        if worker is not None:
            worker.kill()


class IsolatedPool:
    """A few worker processes for CPU-heavy calls that must stay bounded and stoppable.

    Args:
        workers: Child processes (calls beyond that wait their turn; their callers' own budgets still run).
        time_limit_s: Default limit of one call, counted from when a worker starts on it.
        max_memory_bytes: Address-space limit of each worker (``RLIMIT_AS``; a page that needs more fails
            with a clear error instead of swapping the machine); None for no limit.
        preload: Modules each worker imports when it starts, so the first call does not pay for them.

    Raises:
        ConfigError: a bad option.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        time_limit_s: float = 30.0,
        max_memory_bytes: int | None = 2 * 1024**3,
        preload: Sequence[str] = ("drgym.web.extract",),
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"IsolatedPool workers must be a positive integer, got {workers!r}")
        if not _positive(time_limit_s):
            raise ConfigError(f"IsolatedPool time_limit_s must be a positive number, got {time_limit_s!r}")
        if max_memory_bytes is not None and (not isinstance(max_memory_bytes, int) or max_memory_bytes < 1):
            raise ConfigError(f"IsolatedPool max_memory_bytes must be a positive integer or None, "
                              f"got {max_memory_bytes!r}")
        self.workers = workers
        self.time_limit_s = float(time_limit_s)
        self.max_memory_bytes = max_memory_bytes
        self.preload = tuple(preload)
        self.name = f"drgym-isolated-{next(_names)}"
        self.replaced = 0
        """Workers killed and replaced so far (time limit passed, caller gave up, or crash)."""
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Call | None] | None = None
        self._live: set[_Worker] = set()
        self._finalizer: weakref.finalize | None = None

    def __repr__(self) -> str:
        return f"IsolatedPool(workers={self.workers}, time_limit_s={self.time_limit_s:g}, replaced={self.replaced})"

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (started lazily, at the first calls)."""
        with self._lock:
            return sorted(w.proc.pid for w in self._live if w.alive)

    async def run(self, func: Callable[..., T], /, *args: Any, time_limit_s: float | None = None,
                  **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in a worker process; ``func`` and its arguments must be picklable.

        Cancelling the awaiting task (a browse budget, ``asyncio.wait_for``) kills the worker running the call,
        or drops the call if it has not started.

        Raises:
            WorkTimeoutError: the call passed its limit (the worker was killed and is replaced).
            WorkerCrashedError: the worker died during the call.
            Exception: whatever ``func`` raised, unchanged.
        """
        limit = self.time_limit_s if time_limit_s is None else time_limit_s
        if not _positive(limit):
            raise ConfigError(f"IsolatedPool.run time_limit_s must be a positive number, got {limit!r}")
        call = _Call(func, args, kwargs, float(limit))
        self._queue().put(call)
        try:
            return await asyncio.wrap_future(call.future)
        except asyncio.CancelledError:
            call.abandon()
            raise

    def start(self) -> None:
        """Start the workers now, in the background (otherwise the first :meth:`run` starts them)."""
        self._queue()

    def close(self) -> None:
        """Kill every worker and fail calls still queued; safe to call twice. The next ``run`` starts anew."""
        with self._lock:
            jobs, self._jobs = self._jobs, None
            live, self._live = set(self._live), set()
            finalizer, self._finalizer = self._finalizer, None
        if jobs is None:
            return
        if finalizer is not None:
            finalizer.detach()
        while True:  # calls nobody will run: fail them now rather than leave their callers waiting
            try:
                call = jobs.get_nowait()
            except queue.Empty:
                break
            if call is not None and call.future.set_running_or_notify_cancel():
                call.future.set_exception(FetchError("the page reader was closed before this page's turn"))
        for _ in range(self.workers):
            jobs.put(None)
        for worker in live:
            worker.kill()

    async def aclose(self) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _queue(self) -> queue.SimpleQueue[_Call | None]:
        with self._lock:
            if self._jobs is None:
                self._jobs = jobs = queue.SimpleQueue()
                for index in range(self.workers):
                    threading.Thread(
                        target=self._feed, args=(jobs,), name=f"{self.name}-{index}", daemon=True
                    ).start()
                # Kill the children if the pool is dropped or the program ends without close().
                self._finalizer = weakref.finalize(self, _kill_all, self._live)
            return self._jobs

    def _feed(self, jobs: queue.SimpleQueue[_Call | None]) -> None:
        """One worker's thread: start it when needed, run calls on it, replace it when it is killed."""
        try:  # at once, so the pool's first calls find their workers ready or nearly
            worker: _Worker | None = self._start()
        except Exception as exc:  # noqa: BLE001  # the first call retries, and reports the failure
            if self._jobs is jobs:  # not merely closed while it started
                logger.warning("%s: a worker failed to start: %s", self.name, exc)
            worker = None
        while True:
            call = jobs.get()
            if call is None:
                break
            if not call.future.set_running_or_notify_cancel():
                call.payload = b""  # the caller gave up while the call was queued
                continue
            try:
                if worker is None or not worker.alive:
                    worker = self._start()
            except Exception as exc:  # noqa: BLE001  # a worker that cannot start fails the call, clearly
                call.payload = b""
                call.future.set_exception(WorkerCrashedError(f"cannot start an isolated worker: {exc}"))
                continue
            worker = self._run_call(worker, call)
            del call  # this thread waits for the next call next: it must not keep the last page alive
            if worker is None:  # killed: start its replacement now, so the next call does not wait for it
                try:
                    worker = self._start()
                except Exception:  # noqa: BLE001  # closed meanwhile, or cannot start: the next call says so
                    worker = None
        if worker is not None:
            self._retire(worker)

    def _start(self) -> _Worker:
        worker = _Worker(self.preload, self.max_memory_bytes)
        with self._lock:
            if self._jobs is None:  # closed while starting
                worker.kill()
                raise FetchError("the page reader was closed")
            self._live.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()

    def _run_call(self, worker: _Worker, call: _Call) -> _Worker | None:
        """Run ``call`` on ``worker``; return the worker to keep using, or None when it had to be killed."""
        if not call.attach(worker):
            call.future.set_exception(asyncio.CancelledError())
            return worker
        started = time.monotonic()
        try:
            payload, call.payload = call.payload, b""  # sent once; a page's HTML is not kept past that
            worker.send(payload)
            del payload
            reply = worker.receive(started + call.limit)
        except TimeoutError:
            self._replace(worker)
            call.future.set_exception(WorkTimeoutError(
                f"{call.name} passed its time limit of {call.limit:g} s; its worker process was stopped"
            ))
            return None
        except (EOFError, OSError):
            abandoned = not call.attach(None)
            try:
                code: int | None = worker.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            self._replace(worker)
            if abandoned:
                call.future.set_exception(asyncio.CancelledError())
            else:
                call.future.set_exception(WorkerCrashedError(
                    f"{call.name} crashed its worker process (exit status {code}) after "
                    f"{time.monotonic() - started:.1f} s; the worker was replaced"
                ))
            return None
        finally:
            call.attach(None)
        try:
            ok, value = pickle.loads(reply)
        except Exception as exc:  # noqa: BLE001
            call.future.set_exception(WorkerCrashedError(f"{call.name}: unreadable reply from worker ({exc!r})"))
            return worker
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)
        return worker

    def _replace(self, worker: _Worker) -> None:
        self._retire(worker)
        with self._lock:
            self.replaced += 1
        logger.info("%s: worker %d stopped and replaced", self.name, worker.proc.pid)


def _kill_all(live: set[_Worker]) -> None:
    for worker in list(live):
        worker.kill()


def _positive(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0
            and value != float("inf"))
