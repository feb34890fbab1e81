"""Request bodies written at once, not on the event loop's next pass (matters before Python 3.12).

aiohttp writes a request body from a task. Python 3.12 added eager tasks, and aiohttp uses them there: a small
body is on the wire before ``session.request`` first yields. Before 3.12 the task's first step waits until
every callback already queued on the loop has run. In a batch of episodes that means lockstep: a burst of
replies wakes hundreds of episodes in one pass, each builds its next request, and none of those requests leaves
until all of them are built. The model server then gets the next turn in a burst too, so every turn costs the
server's delay plus the whole burst's client time instead of one episode's. Writing the body during the call
that builds it keeps the requests spread out as they come, which is what the server's delay alone allows.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Coroutine, Generator
from typing import Any

import aiohttp

__all__ = ["REQUEST_CLASS", "EagerBodyRequest", "StartedCoroutine"]

_NOTHING: Any = object()


class StartedCoroutine(Coroutine[Any, Any, Any]):
    """A coroutine whose first step has already run; whoever awaits it (or a task) continues from there.

    This is what an eager task does, for loops that cannot: side effects up to the first suspension happen
    now (for a small request body, the whole write), the rest happens as usual. An exception from the first
    step is raised to whoever awaits it, exactly as if it had happened there.
    """

    __slots__ = ("_coro", "_done", "_error", "_first", "_value")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._first: Any = _NOTHING
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        try:
            self._first = coro.send(None)
        except StopIteration as stop:
            self._done, self._value = True, stop.value
        except BaseException as exc:  # noqa: BLE001  (re-raised to whoever awaits it, as the coroutine would)
            self._done, self._error = True, exc

    def send(self, value: Any) -> Any:
        if self._first is not _NOTHING:  # the first step's suspension, handed to the awaiting task
            first, self._first = self._first, _NOTHING
            return first
        if self._done:
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise StopIteration(self._value)
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        error = typ if isinstance(typ, BaseException) else (typ() if val is None else val)
        if self._done:  # e.g. cancelled before the task's first step: nothing is left to interrupt
            raise error
        self._first = _NOTHING
        return self._coro.throw(error)

    def close(self) -> None:
        self._first = _NOTHING
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]

    def __iter__(self) -> StartedCoroutine:
        return self

    def __next__(self) -> Any:
        return self.send(None)


class EagerBodyRequest(aiohttp.ClientRequest):
    """An aiohttp request whose body is written while ``session.request`` runs (see the module docstring).

    Only the timing changes: aiohttp still creates its writer task, which then finds the work done (or, when
    the body must wait for the socket to drain or for ``100-continue``, carries on from where it stopped).
    """

    def write_bytes(self, *args: Any, **kwargs: Any) -> Any:
        return StartedCoroutine(super().write_bytes(*args, **kwargs))


REQUEST_CLASS: type[aiohttp.ClientRequest] = (
    EagerBodyRequest
    if sys.version_info < (3, 12) and inspect.iscoroutinefunction(aiohttp.ClientRequest.write_bytes)
    else aiohttp.ClientRequest
)
"""The request class for client sessions: aiohttp's own where eager tasks already do the same."""
