"""Record live searches and pages, replay them exactly, or use the same store as a query cache.

* :class:`RecordingBackend` (record mode) answers from the store when it already holds the request, else asks
  the live backend and stores the answer (or the error). Every entry an episode saw is pinned and linked to
  that episode (the :class:`~drgym.search.episode.Episode` each call carries); the first answer stored for a request wins, so every recorded
  episode replays exactly even when several recorded the same query.
* :class:`ReplayBackend` with ``strict=True`` (replay mode) answers only from the store and raises
  :class:`ReplayMissError` for anything never recorded, so an evaluation can prove it touched no live service.
  Recorded errors are raised again with the same type and message. It never writes to the file.
* :class:`ReplayBackend` with ``strict=False`` (read-write mode) is a cache: stored answers younger than
  ``ttl_s`` are served (and counted as cache hits by an optional :class:`~drgym.search.metering.Meter`), misses
  go to the inner backend and are stored, evicting least recently used entries past the store's size cap.
  Errors are never cached. Identical requests made at once on one event loop are coalesced: one lookup, at
  most one live call, one answer for all of them (see :class:`ReplayBackend`).

Which episode a call belongs to is an argument of each call (``search(query, k, episode=ep)``), so concurrent
episodes on one event loop never mix their keys.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from drgym import errors as _errors
from drgym.document import Document
from drgym.errors import BudgetExceededError, ConfigError, ReplayMissError, ToolError
from drgym.search.base import Result, SearchBackend
from drgym.search.cache import (
    DEFAULT_CACHE_TTL_S,
    SearchStore,
    StoredEntry,
    normalize_query,
    normalize_url,
    options_key,
)
from drgym.search.episode import Episode, SearchLayer, open_in, search_in

if TYPE_CHECKING:
    from drgym.search.metering import Meter

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "HasCacheOptions",
    "RecordingBackend",
    "ReplayBackend",
    "backend_options",
]

# Errors that describe this run (budget, replay), not the web: never recorded.
_NOT_RECORDED = (BudgetExceededError, ReplayMissError)

# Settings of an HTTP provider that change how it is reached, not what it answers: not part of the key.
_TRANSPORT = frozenset(
    {
        "name",
        "base_url",
        "timeout_s",
        "queue_timeout_s",
        "max_response_bytes",
        "retry",
        "limiter",
        "page_opener",
    }
)

_T = TypeVar("_T")


@runtime_checkable
class HasCacheOptions(Protocol):
    """A backend that states the settings that change its answers (the cache key) itself."""

    def cache_options(self) -> Mapping[str, Any]:
        """Settings that change the answers (not endpoints, timeouts or keys)."""
        ...


def backend_options(backend: SearchBackend) -> dict[str, Any]:
    """The provider settings that change a backend's answers, for the cache key.

    A backend may say so itself (:class:`HasCacheOptions`). The stack's own wrappers (metering, caches,
    recording) are looked through; a failover chain gives ``{name: options}`` per member; an HTTP provider gives
    its own public settings (``gl``, ``hl``, ``search_depth``, ...) minus transport ones (endpoint, timeouts,
    limits). Any other backend has none.
    """
    from drgym.search._http import HttpSearchBackend
    from drgym.search.failover import FailoverBackend

    if isinstance(backend, HasCacheOptions):
        return dict(backend.cache_options())
    if isinstance(backend, FailoverBackend):
        return {member.name: backend_options(member) for member in backend.backends}
    if isinstance(backend, SearchLayer):  # metering, cache, recording: the options of what they wrap
        inner = backend.below()
        return backend_options(inner[0]) if len(inner) == 1 else {}
    if not isinstance(backend, HttpSearchBackend):
        return {}
    return {
        name: value
        for name, value in sorted(vars(backend).items())
        if not name.startswith("_")
        and name not in _TRANSPORT
        and (value is None or isinstance(value, (str, int, float, bool)))
    }


def _open_store(
    store: SearchStore | str | os.PathLike[str], *, create: bool, owns: bool | None
) -> tuple[SearchStore, bool]:
    if isinstance(store, SearchStore):
        return store, bool(owns)
    return SearchStore(store, create=create), True if owns is None else owns


def _record_id(episode: Episode | None) -> str | None:
    return None if episode is None else episode.record_id


def _raise_recorded(entry: StoredEntry) -> None:
    # The recorded class if drgym.errors has it, else its nearest base there (a module's own subclass, such as
    # the fetcher's HTTPStatusError, is raised as FetchError): same message, same handling.
    for name in (entry.error_type, entry.error_base):
        cls = getattr(_errors, name or "", None)
        if isinstance(cls, type) and issubclass(cls, ToolError):
            raise cls(entry.error_message or "")
    raise ToolError(entry.error_message or "")


def _serve(entry: StoredEntry) -> Any:
    if entry.is_error:
        _raise_recorded(entry)
    return entry.value


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class RecordingBackend(SearchLayer):
    """Record mode: answers already stored are served; the rest are asked live and stored, pinned.

    Args:
        inner: The live backend.
        store: A :class:`SearchStore` or a path to one (created if missing).
        record_errors: Also record calls that raised, so replay fails the same way.
        ttl_s: Unpinned entries (left by the cache) older than this are asked again; ``None``: never stale.
            Recorded entries never expire.
        options: Provider options of the key; default :func:`backend_options` of ``inner``.
        close_store: Close the store with this backend (default: only when it opened it from a path).
    """

    def __init__(
        self,
        inner: SearchBackend,
        store: SearchStore | str | os.PathLike[str],
        *,
        record_errors: bool = True,
        ttl_s: float | None = None,
        options: Mapping[str, Any] | None = None,
        close_store: bool | None = None,
    ) -> None:
        if ttl_s is not None and not ttl_s > 0:
            raise ConfigError(f"ttl_s must be > 0 or None, got {ttl_s!r}")
        self.inner = inner
        self.store, self._owns_store = _open_store(store, create=True, owns=close_store)
        self.name = inner.name
        self.record_errors = record_errors
        self.ttl_s = ttl_s
        self.options = options_key(backend_options(inner) if options is None else options)

    def below(self) -> list[SearchBackend]:
        return [self.inner]

    def own_stores(self) -> list[SearchStore]:
        return [self.store]

    async def search(self, query: str, k: int = 10, *, episode: Episode | None = None) -> list[Result]:
        """The recorded answer, or a live search that is recorded (pinned, linked to ``episode``'s record)."""
        where = {"options": self.options, "record": True, "episode": _record_id(episode)}
        entry = await self.store.get_search(self.name, query, k, self.ttl_s, touch=True, **where)
        if entry is not None:
            return _serve(entry)
        try:
            results = await search_in(self.inner, query, k, episode)
        except ToolError as exc:
            if self.record_errors and not isinstance(exc, _NOT_RECORDED):
                kept = await self.store.put_search(self.name, query, k, error=exc, **where)
                if kept is not None:  # another episode recorded this request first: serve what it saw
                    return _serve(kept)
            raise
        kept = await self.store.put_search(self.name, query, k, results, **where)
        return results if kept is None else _serve(kept)

    async def open(self, url: str, *, episode: Episode | None = None) -> Document:
        """The recorded document, or a live read that is recorded."""
        where = {"record": True, "episode": _record_id(episode)}
        entry = await self.store.get_document(self.name, url, self.ttl_s, touch=True, **where)
        if entry is not None:
            return _serve(entry)
        try:
            document = await open_in(self.inner, url, episode)
        except ToolError as exc:
            if self.record_errors and not isinstance(exc, _NOT_RECORDED):
                kept = await self.store.put_document(self.name, url, error=exc, **where)
                if kept is not None:
                    return _serve(kept)
            raise
        kept = await self.store.put_document(self.name, url, document, **where)
        return document if kept is None else _serve(kept)

    async def aclose(self) -> None:
        """Close the inner backend (and the store, if this backend owns it)."""
        await self.inner.aclose()
        if self._owns_store:
            await self.store.aclose()


class ReplayBackend(SearchLayer):
    """Answers from a :class:`SearchStore`: exact replay (``strict=True``) or a TTL cache (``strict=False``).

    Args:
        store: A :class:`SearchStore` or a path (must exist when strict).
        strict: Answer only from the store; a miss raises :class:`ReplayMissError`.
        inner: Cache mode only: the backend that answers misses.
        name: The backend name the entries were stored under; defaults to ``inner.name``, or in strict mode to
            the only backend recorded in the store.
        ttl_s: Cache mode only: entries older than this are refreshed from ``inner`` (``None`` = never stale).
        meter: Counts answers served from the store as cache hits.
        options: Provider options of the key; default :func:`backend_options` of ``inner``, or in strict mode
            the only option set recorded for ``name``.
        close_store: Close the store with this backend (default: only when it opened it from a path).

    Raises:
        ConfigError: inconsistent options (strict with an inner backend, cache mode without one, an ambiguous
            or missing name or option set).

    In cache mode, identical requests (same normalised query and ``k``, or same normalised URL) made while one
    is in flight on the same event loop are *coalesced*: the first looks the store up and, on a miss, starts
    one task that makes the live call and stores the answer; the others await that answer. So a group of
    episodes asking the same question at once costs one provider call, and the meter counts every coalesced
    search as a cache hit (it made no call), besides the usual hits from the store; the store's own hit count
    sees one lookup. The live call is made for the first caller's episode, so it is charged to that episode's
    budget. Errors reach every waiter and are not cached (the next request asks again), except a
    :class:`~drgym.errors.BudgetExceededError`: it is the first caller's, so each other waiter then asks on
    its own budget. A cancelled waiter stops waiting without disturbing the others; the shared task is
    cancelled only when no caller waits for it any more.
    """

    def __init__(
        self,
        store: SearchStore | str | os.PathLike[str],
        *,
        strict: bool = True,
        inner: SearchBackend | None = None,
        name: str | None = None,
        ttl_s: float | None = None,
        meter: Meter | None = None,
        options: Mapping[str, Any] | None = None,
        close_store: bool | None = None,
    ) -> None:
        if strict and inner is not None:
            raise ConfigError(
                "strict replay answers only from the store; pass strict=False to fall through to "
                "the inner backend (cache mode)"
            )
        if not strict and inner is None:
            raise ConfigError("cache mode (strict=False) needs an inner backend to answer misses")
        if ttl_s is not None and not ttl_s > 0:
            raise ConfigError(f"ttl_s must be > 0 or None, got {ttl_s!r}")
        self.store, self._owns_store = _open_store(store, create=not strict, owns=close_store)
        self.strict = strict
        self.inner = inner
        self.ttl_s = None if strict else ttl_s
        self.meter = meter
        self.name = name or (inner.name if inner is not None else self._only_backend())
        if options is not None:
            self.options = options_key(options)
        elif inner is not None:
            self.options = options_key(backend_options(inner))
        else:
            self.options = self._only_options()
        # Coalesced requests in flight: per event loop, by normalised key.
        self._flights: dict[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _Flight]] = {}

    def _only_backend(self) -> str:
        names = self.store.backends_sync()
        if len(names) == 1:
            return names[0]
        if not names:
            raise ConfigError(f"the recording {self.store.path} holds nothing to replay")
        raise ConfigError(
            f"the recording {self.store.path} holds several backends ({', '.join(names)}); "
            f"pass name=... to choose one"
        )

    def _only_options(self) -> str:
        recorded = self.store.search_options_sync(self.name)
        if len(recorded) <= 1:
            return recorded[0] if recorded else options_key(None)
        raise ConfigError(
            f"the recording {self.store.path} holds searches of {self.name!r} made with several provider "
            f"option sets ({'; '.join(recorded)}); pass options=... to choose one"
        )

    def below(self) -> list[SearchBackend]:
        return [] if self.inner is None else [self.inner]

    def own_stores(self) -> list[SearchStore]:
        return [self.store]

    def _hit(self, episode: Episode | None) -> None:
        if self.meter is not None:
            self.meter.record_cache_hit(self.name, None if episode is None else episode.usage)

    async def search(self, query: str, k: int = 10, *, episode: Episode | None = None) -> list[Result]:
        """The stored results for ``(query, k)``; in cache mode a miss is searched live and stored."""
        if self.strict:
            entry = await self.store.get_search(self.name, query, k, options=self.options)
            if entry is None:
                raise ReplayMissError(
                    f"replay miss: no recorded search for {_short(query)!r} (k={k}, backend {self.name!r}) in "
                    f"{self.store.path}; record it first, or replay with strict=False to allow live calls"
                )
            self._hit(episode)
            return _serve(entry)
        results, how = await self._coalesced(
            ("search", normalize_query(query), k),
            lambda: self._lookup_search(query, k),
            lambda: self._live_search(query, k, episode),
        )
        if how != "live":
            self._hit(episode)
        return list(results) if how == "joined" else results  # each waiter gets a list of its own

    async def open(self, url: str, *, episode: Episode | None = None) -> Document:
        """The stored document for ``url``; in cache mode a miss is opened live and stored."""
        if self.strict:
            entry = await self.store.get_document(self.name, url)
            if entry is None:
                raise ReplayMissError(
                    f"replay miss: no recorded page for {_short(url)!r} (backend {self.name!r}) in "
                    f"{self.store.path}; record it first, or replay with strict=False to allow live calls"
                )
            return _serve(entry)
        document, _ = await self._coalesced(
            ("document", normalize_url(url)),
            lambda: self._lookup_document(url),
            lambda: self._live_document(url, episode),
        )
        return document

    # ----------------------------------------------------------------- cache mode: one flight per request

    async def _lookup_search(self, query: str, k: int) -> list[Result] | None:
        entry = await self.store.get_search(
            self.name, query, k, self.ttl_s, options=self.options, touch=True, serve_errors=False
        )
        return None if entry is None else entry.value

    async def _live_search(self, query: str, k: int, episode: Episode | None) -> list[Result]:
        assert self.inner is not None
        results = await search_in(self.inner, query, k, episode)
        await self.store.put_search(self.name, query, k, results, options=self.options, evict=True)
        return results

    async def _lookup_document(self, url: str) -> Document | None:
        entry = await self.store.get_document(self.name, url, self.ttl_s, touch=True, serve_errors=False)
        return None if entry is None else entry.value

    async def _live_document(self, url: str, episode: Episode | None) -> Document:
        assert self.inner is not None
        document = await open_in(self.inner, url, episode)
        await self.store.put_document(self.name, url, document, evict=True)
        return document

    async def _coalesced(
        self,
        key: tuple[Any, ...],
        lookup: Callable[[], Awaitable[_T | None]],
        live: Callable[[], Awaitable[_T]],
    ) -> tuple[_T, str]:
        """The answer to ``key``, asked once for every caller asking it at once on this loop.

        The first caller looks the store up itself (no task: a hit costs what it did before coalescing); on a
        miss it starts a task for the live call, which it awaits shielded, as every later caller does. Returns
        the value and how this caller got it: ``"stored"``, ``"live"`` (it led the live call) or ``"joined"``.
        """
        loop = asyncio.get_running_loop()
        while True:
            flights = self._flights.setdefault(loop, {})
            flight = flights.get(key)
            leads = flight is None
            if flight is None:
                # Registered before any await: every caller that comes after this line joins it.
                flight = flights[key] = _Flight(loop.create_future())
                try:
                    value = await lookup()
                except asyncio.CancelledError:
                    flight.waiters -= 1
                    if flight.waiters:  # callers joined meanwhile: a task of their own answers them
                        self._start(loop, key, flight, self._ask(lookup, live))
                    else:
                        self._land(loop, key, flight)
                    raise
                except Exception as exc:
                    flight.fail(exc)
                    self._land(loop, key, flight)
                    raise
                if value is not None:
                    flight.answer.set_result(value)
                    self._land(loop, key, flight)
                    return value, "stored"
                self._start(loop, key, flight, live())
            else:
                flight.waiters += 1
            try:
                # Shielded: a caller's cancellation ends its own wait, not the call the others await.
                value = await asyncio.shield(flight.answer)
            except BudgetExceededError:
                if leads:
                    raise
                continue  # the first caller's episode is out of budget, maybe not this one: ask on our own
            finally:
                flight.waiters -= 1
                if flight.waiters == 0 and flight.task is not None and not flight.task.done():
                    # Nobody waits any more: stop the live call, as a lone caller's cancellation would.
                    flight.task.cancel()
                    self._land(loop, key, flight)
            return value, "live" if leads else "joined"

    @staticmethod
    async def _ask(lookup: Callable[[], Awaitable[_T | None]], live: Callable[[], Awaitable[_T]]) -> _T:
        value = await lookup()
        return value if value is not None else await live()

    def _start(
        self, loop: asyncio.AbstractEventLoop, key: tuple[Any, ...], flight: _Flight, work: Awaitable[Any]
    ) -> None:
        """Run ``work`` in a task (made for this caller's episode: the live call is charged to it)."""

        async def fly() -> None:
            try:
                value = await work
            except asyncio.CancelledError:
                flight.answer.cancel()
                raise
            except Exception as exc:  # noqa: BLE001  (not lost: every waiter gets it)
                flight.fail(exc)
            else:
                flight.answer.set_result(value)
            finally:
                # Landed once the answer is stored: a later request looks it up instead of joining.
                self._land(loop, key, flight)

        flight.task = loop.create_task(fly())

    def _land(self, loop: asyncio.AbstractEventLoop, key: tuple[Any, ...], flight: _Flight) -> None:
        flights = self._flights.get(loop)
        if flights is not None and flights.get(key) is flight:
            del flights[key]
            if not flights:
                del self._flights[loop]

    async def aclose(self) -> None:
        """Close the inner backend (and the store, if this backend owns it)."""
        if self.inner is not None:
            await self.inner.aclose()
        if self._owns_store:
            await self.store.aclose()


class _Flight:
    """One coalesced request: the answer its callers await, the task making the live call, how many wait."""

    __slots__ = ("answer", "task", "waiters")

    def __init__(self, answer: asyncio.Future[Any]) -> None:
        self.answer = answer
        self.task: asyncio.Task[None] | None = None
        self.waiters = 1  # the caller that starts it

    def fail(self, exc: BaseException) -> None:
        """Give every waiter ``exc``; marked retrieved, so none left waiting is no "never retrieved" warning."""
        self.answer.set_exception(exc)
        self.answer.exception()
