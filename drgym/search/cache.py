"""A SQLite store of search answers and opened documents, for recording, replay and the query cache.

One file (WAL mode) holds every entry in one table, keyed by a *normalised* request (see
:mod:`drgym.search._cache_codec`): searches by ``(backend, query, k, options)``, documents by
``(backend, url)``. ``options`` is the canonical JSON of the provider settings that change the answer
(``gl``/``hl`` for Serper, ``search_depth`` for Tavily, ...), so two configurations never share an entry.
Values come back byte-for-byte; besides answers, a recording may hold the *error* a call raised, so a replayed
episode fails where the recorded one failed, with the same message.

A store that cannot write (disk full, read-only mount, I/O error) keeps serving what it holds: a lookup still
answers (only its hit count and LRU time go unrecorded), a write is skipped, and :attr:`SearchStore.degraded`
says why (logged once, when it starts); the next write that succeeds clears it. A file that cannot be written
here is opened read-only, so recordings replay from read-only media.

Entries written in record mode are *pinned*: linked to the episodes that saw them, never evicted, never
overwritten (the first answer wins, so every recorded episode replays exactly). Cache entries are evicted least
recently used first once the store passes its size cap. Totals are kept by triggers inside each transaction, so
they stay right under concurrent writers in several processes and after a crash.

SQLite runs in worker threads (:func:`asyncio.to_thread`) so the event loop never waits on the disk. The parts:

* :mod:`drgym.search._cache_codec`: keys and values (normalisation, exact JSON, :class:`StoredEntry`);
* :mod:`drgym.search._cache_schema`: the tables, and the checks that a file is a store of this schema;
* :mod:`drgym.search._cache_db`: the connection (read-only where the file cannot be written), transactions
  retried under lock contention, error mapping;
* :mod:`drgym.search.cache_io`: portable export and all-or-nothing import;
* this module: the store (lookups, writes, eviction, maintenance), and the public names of all of them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drgym.document import Document
from drgym.errors import ConfigError, DataError
from drgym.search._cache_codec import (
    KINDS,
    StoredEntry,
    decode_entry,
    doc_to_obj,
    encode_payload,
    is_error_payload,
    normalize_query,
    normalize_url,
    options_key,
    results_from_json,
    results_to_json,
    results_to_obj,
    search_key,
    url_key,
)
from drgym.search._cache_db import StoreFile, StoreUnwritable
from drgym.search._cache_schema import COLUMNS, WHERE_KEY, bump, link, totals
from drgym.search.base import Result
from drgym.search.cache_io import EXPORT_FORMAT, EXPORT_VERSION, merge_export, write_export

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "DEFAULT_MAX_BYTES",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "KINDS",
    "SearchStore",
    "StoredEntry",
    "normalize_query",
    "normalize_url",
    "options_key",
    "results_from_json",
    "results_to_json",
]

DEFAULT_CACHE_TTL_S = 7 * 24 * 3600.0
"""How long a cached (unpinned) answer is reused: 7 days, as in the paper. Recorded entries never expire."""

DEFAULT_MAX_BYTES = 1 << 30
"""Default size cap of a cache (1 GiB of stored answers); pinned (recorded) entries are never evicted."""

_Ident = tuple[str, str, bytes, int, str]
"""What an entry is unique by: ``(kind, backend, key, k, options)``, the arguments of ``WHERE_KEY``."""


class SearchStore:
    """The SQLite file behind recordings, replay and the query cache.

    Args:
        path: The database file.
        create: Create the file if missing; ``False`` (replay) makes a missing file an error.
        max_bytes: Size cap of the stored answers (payload and key bytes); writes made with ``evict=True`` (the
            read-write cache) evict unpinned entries, least recently used first, to stay under it. ``None``: no
            cap. Pinned (recorded) entries are never evicted, so a recording may exceed it.
        max_entries: Cap on the number of entries, enforced the same way (``None``: no cap).
        busy_timeout_s: How long a call waits for another process's write lock before failing.

    Raises:
        DataError: the file is missing (``create=False``), unreadable, corrupt, damaged, another program's
            database, or of another schema; the message names the file and what to do.
        ConfigError: a cap is not a positive integer.

    A file that cannot be written here is opened read-only (:attr:`read_only` says why): lookups and
    inspection work, writes are skipped as on a full disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        max_entries: int | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        for label, cap in (("max_bytes", max_bytes), ("max_entries", max_entries)):
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ConfigError(f"SearchStore {label} must be a positive integer or None, got {cap!r}")
        if not busy_timeout_s > 0:
            raise ConfigError(f"SearchStore busy_timeout_s must be > 0, got {busy_timeout_s!r}")
        self.path = Path(path).expanduser()
        if not create and not self.path.is_file():
            raise DataError(f"no search recording at {self.path}: record one first with RecordingBackend")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.busy_timeout_s = float(busy_timeout_s)
        self._db = StoreFile(self.path, self.busy_timeout_s)

    @property
    def degraded(self) -> str | None:
        """Why the store skipped its last write (disk full, read-only ...); ``None`` while writes succeed."""
        return self._db.degraded

    @property
    def read_only(self) -> str | None:
        """Why the file was opened read-only (read-only mount, no write permission), or ``None``."""
        return self._db.read_only

    @property
    def skipped_writes(self) -> int:
        """Writes skipped since the store was opened because the disk refused them."""
        return self._db.skipped_writes

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._db.close()

    async def aclose(self) -> None:
        """Close the connection (async spelling)."""
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"SearchStore({str(self.path)!r})"

    # ----------------------------------------------------------------- entries (sync; run in worker threads)

    def _decode(self, kind: str, row: tuple[Any, ...]) -> StoredEntry:
        _, text, created, _, pinned = row
        try:
            return decode_entry(kind, text, created, bool(pinned))
        except (ValueError, KeyError, TypeError) as exc:
            raise self._db.corrupt(exc) from exc

    def _get(
        self,
        args: _Ident,
        max_age_s: float | None,
        *,
        touch: bool,
        serve_errors: bool,
        record: bool,
        episode: str | None,
    ) -> StoredEntry | None:
        kind, now = args[0], time.time()

        def usable(row: tuple[Any, ...] | None) -> bool:
            if row is None or (row[3] and not serve_errors):
                return False
            return bool(row[4]) or max_age_s is None or now - row[2] <= max_age_s

        def read_only() -> StoredEntry | None:
            rows = self._db.read(f"SELECT {COLUMNS} FROM entries WHERE {WHERE_KEY}", args)
            return self._decode(kind, rows[0]) if rows and usable(rows[0]) else None

        if not (touch or record):
            return read_only()

        def tx(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row = conn.execute(f"SELECT {COLUMNS} FROM entries WHERE {WHERE_KEY}", args).fetchone()
            if not usable(row):
                bump(conn, f"{kind}_misses")
                return None
            pin = 1 if record else row[4]
            conn.execute(
                "UPDATE entries SET accessed = ?, hits = hits + 1, pinned = ? WHERE id = ?",
                (now, pin, row[0]),
            )
            if record and episode is not None:
                link(conn, episode, row[0])
            return (*row[:4], pin)

        try:
            found = self._db.write(tx)
        except StoreUnwritable:  # the answer is still there to serve; only its bookkeeping is lost
            return read_only()
        return None if found is None else self._decode(kind, found)

    def _put(
        self, args: _Ident, payload: str, *, record: bool, episode: str | None, evict: bool
    ) -> StoredEntry | None:
        kind, key, now = args[0], args[2], time.time()
        is_error = int(is_error_payload(payload))

        def tx(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            # An existing pinned entry is never overwritten: it is what a recorded episode saw.
            got = conn.execute(
                "INSERT INTO entries (kind, backend, key, k, options, payload, is_error, size, created, accessed,"
                " pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, backend, key, k, options) DO UPDATE SET payload = excluded.payload, "
                "is_error = excluded.is_error, size = excluded.size, created = excluded.created, "
                "accessed = excluded.accessed, pinned = excluded.pinned WHERE entries.pinned = 0 RETURNING id",
                (*args, payload, is_error, len(payload) + len(key), now, now, int(record)),
            ).fetchall()
            kept = None
            if got:
                entry_id = got[0][0]
            else:
                kept = conn.execute(f"SELECT {COLUMNS} FROM entries WHERE {WHERE_KEY}", args).fetchone()
                entry_id = kept[0]
                conn.execute("UPDATE entries SET accessed = ? WHERE id = ?", (now, entry_id))
            if record and episode is not None:
                link(conn, episode, entry_id)
            if evict:
                self._evict(conn)
            return kept

        try:
            kept = self._db.write(tx)
        except StoreUnwritable:  # the caller still has its answer: serve it, store it another time
            return None
        return None if kept is None else self._decode(kind, kept)

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Delete unpinned entries, least recently used first, until the caps hold (or only pinned ones remain)."""
        if self.max_bytes is None and self.max_entries is None:
            return 0
        count, total = totals(conn, self.path)
        over_bytes = 0 if self.max_bytes is None else total - self.max_bytes
        over_count = 0 if self.max_entries is None else count - self.max_entries
        if over_bytes <= 0 and over_count <= 0:
            return 0
        victims: list[int] = []
        # Walk the LRU index lazily: only as many rows as must go are read, however large the store.
        cursor = conn.execute("SELECT id, size FROM entries WHERE pinned = 0 ORDER BY accessed, id")
        try:
            while over_bytes > 0 or over_count > 0:
                row = cursor.fetchone()
                if row is None:
                    break  # only pinned entries are left: recordings are complete, never evicted
                victims.append(row[0])
                over_bytes -= row[1]
                over_count -= 1
        finally:
            cursor.close()
        for start in range(0, len(victims), 500):
            chunk = victims[start : start + 500]
            conn.execute(f"DELETE FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return len(victims)

    # ----------------------------------------------------------------- searches and documents

    def get_search_sync(
        self,
        backend: str,
        query: str,
        k: int,
        max_age_s: float | None = None,
        *,
        options: Mapping[str, Any] | str | None = None,
        touch: bool = False,
        serve_errors: bool = True,
        record: bool = False,
        episode: str | None = None,
    ) -> StoredEntry | None:
        """The stored answer for a search, or ``None``.

        Args:
            backend: The backend name the entry was stored under.
            query: The query as asked (normalised here).
            k: Results asked for.
            max_age_s: Entries older than this count as missing (pinned ones never expire).
            options: Provider options the answer depends on (see :func:`options_key`).
            touch: Count the hit (or the miss) and mark the entry used, for LRU eviction; writes to the file.
            serve_errors: ``False`` treats a recorded error as missing (the cache never serves errors).
            record: Pin the entry found and link it to ``episode`` (record mode).
            episode: The recording episode to link the entry to.
        """
        ident = ("search", backend, search_key(query), k, options_key(options))
        return self._get(
            ident, max_age_s, touch=touch, serve_errors=serve_errors, record=record, episode=episode
        )

    def put_search_sync(
        self,
        backend: str,
        query: str,
        k: int,
        results: list[Result] | None = None,
        error: BaseException | None = None,
        *,
        options: Mapping[str, Any] | str | None = None,
        record: bool = False,
        episode: str | None = None,
        evict: bool = False,
    ) -> StoredEntry | None:
        """Store search results, or the error the search raised.

        Args:
            record: Pin the entry (never evicted nor overwritten) and link it to ``episode``.
            evict: Evict least recently used unpinned entries to keep the store under its caps.

        Returns:
            ``None`` when this answer was stored (or the disk refused the write: see :attr:`degraded`); the
            entry already stored, when a pinned one was kept instead.
        """
        ident = ("search", backend, search_key(query), k, options_key(options))
        payload = encode_payload(results_to_obj(results or []), error)
        return self._put(ident, payload, record=record, episode=episode, evict=evict)

    def get_document_sync(
        self,
        backend: str,
        url: str,
        max_age_s: float | None = None,
        *,
        touch: bool = False,
        serve_errors: bool = True,
        record: bool = False,
        episode: str | None = None,
    ) -> StoredEntry | None:
        """The stored document for a URL (normalised here), or ``None``; arguments as :meth:`get_search_sync`."""
        ident = ("document", backend, url_key(url), 0, "")
        return self._get(
            ident, max_age_s, touch=touch, serve_errors=serve_errors, record=record, episode=episode
        )

    def put_document_sync(
        self,
        backend: str,
        url: str,
        document: Document | None = None,
        error: BaseException | None = None,
        *,
        record: bool = False,
        episode: str | None = None,
        evict: bool = False,
    ) -> StoredEntry | None:
        """Store a document, or the error opening it raised; returns as :meth:`put_search_sync`."""
        payload = encode_payload(doc_to_obj(document) if document is not None else None, error)
        return self._put(
            ("document", backend, url_key(url), 0, ""), payload, record=record, episode=episode, evict=evict
        )

    # ----------------------------------------------------------------- maintenance and inspection

    def backends_sync(self) -> list[str]:
        """Names of the backends with anything stored."""
        return [row[0] for row in self._db.read("SELECT DISTINCT backend FROM entries ORDER BY backend")]

    def search_options_sync(self, backend: str) -> list[str]:
        """The distinct provider-option keys that ``backend``'s searches were stored with."""
        rows = self._db.read(
            "SELECT DISTINCT options FROM entries WHERE kind = 'search' AND backend = ? ORDER BY options",
            (backend,),
        )
        return [row[0] for row in rows]

    def episodes_sync(self) -> list[str]:
        """Ids of the episodes recorded in the store."""
        return [
            row[0] for row in self._db.read("SELECT DISTINCT episode FROM episode_entries ORDER BY episode")
        ]

    def counts_sync(self) -> dict[str, int]:
        """How many searches and documents are stored."""
        rows = dict(self._db.read("SELECT kind, COUNT(*) FROM entries GROUP BY kind"))
        return {"searches": rows.get("search", 0), "documents": rows.get("document", 0)}

    def purge_sync(self, max_age_s: float, *, keep_recorded: bool = True) -> int:
        """Delete entries older than ``max_age_s`` seconds (unpinned ones only by default); return how many."""
        cutoff = time.time() - max_age_s
        pinned = "AND pinned = 0" if keep_recorded else ""
        return self._db.write(
            lambda c: c.execute(f"DELETE FROM entries WHERE created < ? {pinned}", (cutoff,)).rowcount
        )

    def prune_sync(
        self, max_age_s: float | None = None, *, errors: bool = False, vacuum: bool = False
    ) -> dict[str, int]:
        """Drop expired unpinned entries, recorded errors (``errors=True``), then evict down to the caps.

        ``vacuum`` rewrites the file so the freed pages go back to the disk (SQLite otherwise reuses them).
        Returns how many entries each step removed.
        """

        def tx(conn: sqlite3.Connection) -> dict[str, int]:
            done = {"expired": 0, "errors": 0, "evicted": 0}
            if max_age_s is not None:
                cutoff = time.time() - max_age_s
                done["expired"] = conn.execute(
                    "DELETE FROM entries WHERE pinned = 0 AND created < ?", (cutoff,)
                ).rowcount
            if errors:
                done["errors"] = conn.execute("DELETE FROM entries WHERE is_error = 1").rowcount
            done["evicted"] = self._evict(conn)
            return done

        done = self._db.write(tx)
        if vacuum:
            self._db.vacuum()
        return done

    def stats_sync(self) -> dict[str, Any]:
        """Entries by kind and backend, bytes, age range, episodes, hit and miss counts, size on disk."""
        by_backend: dict[str, dict[str, Any]] = {}
        rows = self._db.read(
            "SELECT backend, kind, COUNT(*), SUM(size), SUM(is_error), SUM(pinned), SUM(hits) "
            "FROM entries GROUP BY backend, kind ORDER BY backend, kind"
        )
        for backend, kind, count, size, n_errors, n_pinned, hits in rows:
            by_backend.setdefault(backend, {})[kind] = {
                "entries": count,
                "bytes": size,
                "errors": n_errors,
                "pinned": n_pinned,
                "hits": hits,
            }
        count, total = self._db.query(lambda conn: totals(conn, self.path))
        oldest, newest, hits, pinned = self._db.read(
            "SELECT MIN(created), MAX(created), COALESCE(SUM(hits), 0), COALESCE(SUM(pinned), 0) FROM entries"
        )[0]
        counters = dict(self._db.read("SELECT name, value FROM counters"))
        episodes = self._db.read("SELECT COUNT(DISTINCT episode) FROM episode_entries")[0][0]
        disk = sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.is_file()
        )
        kinds = self.counts_sync()
        return {
            "path": str(self.path),
            "entries": count,
            "searches": kinds["searches"],
            "documents": kinds["documents"],
            "pinned": pinned,
            "bytes": total,
            "disk_bytes": disk,
            "oldest": oldest,
            "newest": newest,
            "episodes": episodes,
            "hits": hits,
            "misses": sum(v for name, v in counters.items() if name.endswith("_misses")),
            "by_backend": by_backend,
            "max_bytes": self.max_bytes,
            "max_entries": self.max_entries,
            "read_only": self.read_only,
            "degraded": self.degraded,
        }

    # ----------------------------------------------------------------- export and import

    def export_sync(self, out: str | os.PathLike[str], *, episode: str | None = None) -> int:
        """Write the store (or one episode's entries) to ``out`` as gzip'd JSON lines; return the entry count.

        The file starts with a header (format, version, entry count) and ends with an end line carrying the
        count again, so a truncated copy is detected on import. It is written beside ``out`` and renamed into
        place, so ``out`` is never left half written. The export reads one consistent snapshot.

        Raises:
            DataError: ``episode`` was never recorded here, or ``out`` cannot be written.
        """
        target = Path(out).expanduser()
        conn = self._db.connect(setup=False)  # a connection of its own: the snapshot does not block the store
        try:
            return write_export(conn, target, episode=episode, store=self.path)
        except sqlite3.DatabaseError as exc:
            raise self._db.failure(exc, writing=False) from exc
        finally:
            conn.close()

    def import_sync(self, source: str | os.PathLike[str]) -> dict[str, int]:
        """Merge an export file into this store, in one transaction: all of it, or nothing.

        Merge rules per entry: a new key is added; an entry already pinned here is kept (a different imported
        answer counts as a conflict); an unpinned one is replaced by an imported pinned or newer entry. Episode
        links are merged. Returns counts: ``entries``, ``added``, ``updated``, ``kept``, ``conflicts``,
        ``episodes``, ``evicted``.

        Raises:
            DataError: the file is missing, not an export, of a newer version, truncated or corrupt; the message
                names the file, and nothing was imported.
        """
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"cannot import {path}: no such file")

        def tx(conn: sqlite3.Connection) -> dict[str, int]:
            done = merge_export(conn, path)
            done["evicted"] = self._evict(conn)
            return done

        return self._db.write(tx)

    # ----------------------------------------------------------------- async API

    async def get_search(
        self, backend: str, query: str, k: int, max_age_s: float | None = None, **kwargs: Any
    ) -> StoredEntry | None:
        """Async :meth:`get_search_sync`."""
        return await asyncio.to_thread(self.get_search_sync, backend, query, k, max_age_s, **kwargs)

    async def put_search(
        self,
        backend: str,
        query: str,
        k: int,
        results: list[Result] | None = None,
        error: BaseException | None = None,
        **kwargs: Any,
    ) -> StoredEntry | None:
        """Async :meth:`put_search_sync`."""
        return await asyncio.to_thread(self.put_search_sync, backend, query, k, results, error, **kwargs)

    async def get_document(
        self, backend: str, url: str, max_age_s: float | None = None, **kwargs: Any
    ) -> StoredEntry | None:
        """Async :meth:`get_document_sync`."""
        return await asyncio.to_thread(self.get_document_sync, backend, url, max_age_s, **kwargs)

    async def put_document(
        self,
        backend: str,
        url: str,
        document: Document | None = None,
        error: BaseException | None = None,
        **kwargs: Any,
    ) -> StoredEntry | None:
        """Async :meth:`put_document_sync`."""
        return await asyncio.to_thread(self.put_document_sync, backend, url, document, error, **kwargs)

    async def purge(self, max_age_s: float) -> int:
        """Async :meth:`purge_sync`."""
        return await asyncio.to_thread(self.purge_sync, max_age_s)
