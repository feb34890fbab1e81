"""Record live searches and pages, replay them exactly, or use the same store as a query cache.

* :class:`RecordingBackend` passes every call to a live backend and stores the answer (or the error).
* :class:`ReplayBackend` with ``strict=True`` answers only from the store and raises :class:`ReplayMissError`
  for anything never recorded, so an evaluation can prove it touched no live service. Recorded errors are
  raised again with the same type and message.
* :class:`ReplayBackend` with ``strict=False`` is a cache: stored answers younger than ``ttl_s`` are served
  (and counted as cache hits by an optional :class:`~drgym.search.metering.Meter`), misses go to the inner
  backend and are stored. Errors are never cached.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from drgym import errors as _errors
from drgym.errors import BudgetExceededError, ConfigError, ReplayMissError, ToolError
from drgym.search.base import Document, Result, SearchBackend
from drgym.search.cache import SearchStore, StoredEntry

if TYPE_CHECKING:
    from drgym.search.metering import Meter

__all__ = ["DEFAULT_CACHE_TTL_S", "RecordingBackend", "ReplayBackend"]

DEFAULT_CACHE_TTL_S = 7 * 24 * 3600.0
"""Cached search answers are reused for 7 days, as in the paper."""

# Errors that describe this run (budget, replay), not the web: never recorded.
_NOT_RECORDED = (BudgetExceededError, ReplayMissError)


def _open_store(store: SearchStore | str | os.PathLike[str], *, create: bool) -> tuple[SearchStore, bool]:
    if isinstance(store, SearchStore):
        return store, False
    return SearchStore(store, create=create), True


def _raise_recorded(entry: StoredEntry) -> None:
    cls = getattr(_errors, entry.error_type or "", None)
    if not (isinstance(cls, type) and issubclass(cls, ToolError)):
        cls = ToolError
    raise cls(entry.error_message or "")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class RecordingBackend:
    """Passes calls to ``inner`` and records each answer (or raised ``ToolError``) in ``store``.

    Args:
        inner: The live backend.
        store: A :class:`SearchStore` or a path to one (created if missing).
        record_errors: Also record calls that raised, so replay fails the same way.
    """

    def __init__(
        self, inner: SearchBackend, store: SearchStore | str | os.PathLike[str], *, record_errors: bool = True
    ) -> None:
        self.inner = inner
        self.store, self._owns_store = _open_store(store, create=True)
        self.name = inner.name
        self.record_errors = record_errors

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Search live and record the answer."""
        try:
            results = await self.inner.search(query, k)
        except ToolError as exc:
            if self.record_errors and not isinstance(exc, _NOT_RECORDED):
                await self.store.put_search(self.name, query, k, error=exc)
            raise
        await self.store.put_search(self.name, query, k, results)
        return results

    async def open(self, url: str) -> Document:
        """Open live and record the document."""
        try:
            document = await self.inner.open(url)
        except ToolError as exc:
            if self.record_errors and not isinstance(exc, _NOT_RECORDED):
                await self.store.put_document(self.name, url, error=exc)
            raise
        await self.store.put_document(self.name, url, document)
        return document

    async def aclose(self) -> None:
        """Close the inner backend (and the store, if this backend opened it)."""
        await self.inner.aclose()
        if self._owns_store:
            await self.store.aclose()


class ReplayBackend:
    """Answers from a :class:`SearchStore`: exact replay (``strict=True``) or a TTL cache (``strict=False``).

    Args:
        store: A :class:`SearchStore` or a path (must exist when strict).
        strict: Answer only from the store; a miss raises :class:`ReplayMissError`.
        inner: Cache mode only: the backend that answers misses.
        name: The backend name the entries were stored under; defaults to ``inner.name``, or in strict mode to
            the only backend recorded in the store.
        ttl_s: Cache mode only: entries older than this are refreshed from ``inner`` (``None`` = never stale).
        meter: Counts answers served from the store as cache hits.

    Raises:
        ConfigError: inconsistent options (strict with an inner backend, cache mode without one, an ambiguous
            or missing name).
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
        self.store, self._owns_store = _open_store(store, create=not strict)
        self.strict = strict
        self.inner = inner
        self.ttl_s = None if strict else ttl_s
        self.meter = meter
        self.name = name or (inner.name if inner is not None else self._only_backend())

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

    def _hit(self) -> None:
        if self.meter is not None:
            self.meter.record_cache_hit(self.name)

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """The stored results for ``(query, k)``; in cache mode a miss is searched live and stored."""
        entry = await self.store.get_search(self.name, query, k, self.ttl_s)
        if entry is not None and (self.strict or not entry.is_error):
            self._hit()
            if entry.is_error:
                _raise_recorded(entry)
            return entry.value
        if self.strict or self.inner is None:
            raise ReplayMissError(
                f"replay miss: no recorded search for {_short(query)!r} (k={k}, backend {self.name!r}) in "
                f"{self.store.path}; record it first, or replay with strict=False to allow live calls"
            )
        results = await self.inner.search(query, k)
        await self.store.put_search(self.name, query, k, results)
        return results

    async def open(self, url: str) -> Document:
        """The stored document for ``url``; in cache mode a miss is opened live and stored."""
        entry = await self.store.get_document(self.name, url, self.ttl_s)
        if entry is not None and (self.strict or not entry.is_error):
            if entry.is_error:
                _raise_recorded(entry)
            return entry.value
        if self.strict or self.inner is None:
            raise ReplayMissError(
                f"replay miss: no recorded page for {_short(url)!r} (backend {self.name!r}) in "
                f"{self.store.path}; record it first, or replay with strict=False to allow live calls"
            )
        document = await self.inner.open(url)
        await self.store.put_document(self.name, url, document)
        return document

    async def aclose(self) -> None:
        """Close the inner backend (and the store, if this backend opened it)."""
        if self.inner is not None:
            await self.inner.aclose()
        if self._owns_store:
            await self.store.aclose()
