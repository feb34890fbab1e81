"""A SQLite store of search answers and opened documents, for recording, replay and the query cache.

One file (WAL mode) holds every entry in one table, keyed by a *normalised* request:

* searches by ``(backend, query, k, options)``: the query stripped with its whitespace collapsed (case, accents
  and punctuation are kept: most engines ignore case, but not all, and a miss costs less than a wrong answer);
  ``options`` is the canonical JSON of the provider settings that change the answer (``gl``/``hl`` for Serper,
  ``search_depth`` for Tavily, ...), so two configurations never share an entry;
* documents by ``(backend, url)``: scheme and host lowercased, default port and fragment dropped, an empty path
  written ``/``; path and query are kept exactly (they are case-sensitive on most servers).

Values are JSON written with ASCII escapes, so any Python string (lone surrogates and NULs included) comes back
exactly as it went in: replay is byte-for-byte. Besides answers, a recording may hold the *error* a call raised,
so a replayed episode fails where the recorded one failed, with the same message.

Entries written in record mode are *pinned*: linked to the episodes that saw them, never evicted, never
overwritten (the first answer wins, so every recorded episode replays exactly). Cache entries are evicted least
recently used first once the store passes its size cap. Totals are kept by triggers inside each transaction, so
they stay right under concurrent writers in several processes and after a crash.

SQLite runs in worker threads (:func:`asyncio.to_thread`) so the event loop never waits on the disk; one
connection per store is shared behind a lock. Writes are ``BEGIN IMMEDIATE`` transactions retried while another
process holds the lock; a process killed mid-write loses only its uncommitted transaction (WAL recovery on the
next open).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from drgym.errors import ConfigError, DataError
from drgym.search.base import Document, Result

__all__ = [
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

DEFAULT_MAX_BYTES = 1 << 30
"""Default size cap of a cache (1 GiB of stored answers); pinned (recorded) entries are never evicted."""

KINDS = ("search", "document")
EXPORT_FORMAT = "drgym-search-store"
EXPORT_VERSION = 1

_T = TypeVar("_T")
_SCHEMA_VERSION = "2"
_MIGRATES = ("1",)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS drgym_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS entries (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        backend TEXT NOT NULL,
        key BLOB NOT NULL,
        k INTEGER NOT NULL,
        options TEXT NOT NULL,
        payload TEXT NOT NULL,
        is_error INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        accessed REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        pinned INTEGER NOT NULL DEFAULT 0,
        UNIQUE (kind, backend, key, k, options))""",
    "CREATE INDEX IF NOT EXISTS entries_lru ON entries (pinned, accessed)",
    """CREATE TABLE IF NOT EXISTS episode_entries (
        episode TEXT NOT NULL, entry INTEGER NOT NULL, PRIMARY KEY (episode, entry)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS episode_entries_entry ON episode_entries (entry)",
    """CREATE TABLE IF NOT EXISTS totals (
        id INTEGER PRIMARY KEY CHECK (id = 1), entries INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO totals (id, entries, bytes) VALUES (1, 0, 0)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # Totals move with every insert, delete and resize inside the same transaction, so they are always right.
    """CREATE TRIGGER IF NOT EXISTS entries_ai AFTER INSERT ON entries BEGIN
        UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 1; END""",
    """CREATE TRIGGER IF NOT EXISTS entries_ad AFTER DELETE ON entries BEGIN
        UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 1;
        DELETE FROM episode_entries WHERE entry = OLD.id; END""",
    """CREATE TRIGGER IF NOT EXISTS entries_au AFTER UPDATE OF size ON entries BEGIN
        UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1; END""",
)
_COLUMNS = "id, payload, created, is_error, pinned"
_WHERE_KEY = "kind = ? AND backend = ? AND key = ? AND k = ? AND options = ?"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class StoredEntry:
    """One stored answer: ``value`` (results or a document) or the error the call raised."""

    value: Any
    error_type: str | None
    error_message: str | None
    created: float
    pinned: bool = False
    error_base: str | None = None
    """The nearest class of :mod:`drgym.errors` the recorded error belongs to (what replay raises)."""

    @property
    def is_error(self) -> bool:
        """True when the recorded call raised instead of answering."""
        return self.error_type is not None


# --------------------------------------------------------------------------- keys


def normalize_query(query: str) -> str:
    """The cache key of a query: stripped, whitespace runs collapsed to one space; case is kept."""
    return " ".join(query.split())


def normalize_url(url: str) -> str:
    """The cache key of an http(s) URL: scheme/host lowercased, default port and fragment dropped.

    Anything that is not a well-formed http(s) URL is only stripped, never rejected: the store keys what the
    backend was asked, hostile strings included.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.netloc:
            return text
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port or bracket: keep the text as it came
        return text
    if not host:
        return text
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def options_key(options: Mapping[str, Any] | str | None) -> str:
    """Canonical JSON of provider options (sorted keys); a ``str`` is taken as already canonical."""
    if isinstance(options, str):
        return options
    return json.dumps(
        dict(options or {}), sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=_json_default
    )


def _key(text: str) -> bytes:
    # Keys are stored as bytes so that any str (even one with lone surrogates) can be a key.
    return text.encode("utf-8", "surrogatepass")


def _search_key(query: str) -> bytes:
    return _key(normalize_query(query))


def _url_key(url: str) -> bytes:
    return _key(normalize_url(url))


# --------------------------------------------------------------------------- values


def _json_default(value: Any) -> Any:
    # numpy scalars (BM25 scores) become Python numbers; anything else is a bug in the backend's extras.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in search results: extras must be JSON values")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, default=_json_default, separators=(",", ":"))


def _results_to_obj(results: list[Result]) -> list[dict[str, Any]]:
    return [{"title": r.title, "url": r.url, "snippet": r.snippet, "extras": r.extras} for r in results]


def _results_from_obj(items: list[dict[str, Any]]) -> list[Result]:
    return [Result(d["title"], d["url"], d["snippet"], d.get("extras") or {}) for d in items]


def results_to_json(results: list[Result]) -> str:
    """Serialise results exactly (extras included), as the store does."""
    return _dumps(_results_to_obj(results))


def results_from_json(text: str) -> list[Result]:
    """Inverse of :func:`results_to_json`."""
    return _results_from_obj(json.loads(text))


def _doc_to_obj(doc: Document) -> dict[str, str]:
    return {
        "url": doc.url,
        "title": doc.title,
        "content": doc.content,
        "content_type": doc.content_type,
        "source": doc.source,
    }


def _error_base(error: BaseException) -> str | None:
    from drgym import errors

    for cls in type(error).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            return cls.__name__
    return None


def _payload(value: Any, error: BaseException | None) -> str:
    if error is not None:
        err = {"type": type(error).__name__, "base": _error_base(error), "message": str(error)}
        return _dumps({"error": err})
    try:
        return _dumps({"value": value})
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "search": _results_from_obj,
    "document": lambda v: Document(**v),
}


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


# --------------------------------------------------------------------------- the store


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
        DataError: the file is missing (``create=False``), unreadable, corrupt, another program's database, or
            of an unknown schema; the message names the file and what to do.
        ConfigError: a cap is not a positive integer.
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
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._conn = self._open_connection(setup=True)

    # ----------------------------------------------------------------- connection

    def _corrupt(self, exc: BaseException) -> DataError:
        return DataError(
            f"search store {self.path} is not a readable SQLite database ({exc}). If it is a cache, delete "
            f"the file (and its -wal/-shm files) and it will be rebuilt; if it is a recording, restore it "
            f"from a copy."
        )

    def _failure(self, exc: sqlite3.DatabaseError) -> DataError:
        # An operational failure (disk full, read-only file, I/O error) is not a corrupt file: say which it is.
        if isinstance(exc, sqlite3.OperationalError):
            return DataError(f"search store {self.path} could not be used: {exc}")
        return self._corrupt(exc)

    def _retry(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` again while another process holds the lock (SQLite's own wait covers most of it)."""
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise DataError(
                        f"search store {self.path} stayed locked by another process for "
                        f"{self.busy_timeout_s:g} s: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _open_connection(self, *, setup: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                check_same_thread=False,
                isolation_level=None,
                timeout=min(5.0, self.busy_timeout_s),
            )
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"cannot open search store {self.path}: {exc}") from exc
        try:
            if setup:
                self._retry(lambda: self._setup(conn))
            else:
                conn.execute(f"PRAGMA busy_timeout = {int(min(5.0, self.busy_timeout_s) * 1000)}")
        except DataError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._failure(exc) from exc
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "drgym_meta" not in tables:
            raise DataError(
                f"{self.path} is a SQLite database of another program "
                f"(tables: {', '.join(sorted(tables))}), not a drgym search store; point the store at "
                f"another file"
            )
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if self._schema(conn, tables) == _SCHEMA_VERSION:
            return  # the common case: no write, so many processes open the file at once without waiting
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = self._schema(conn, tables)  # again, under the lock: another process may have set it up
            if version in _MIGRATES:
                self._migrate_v1(conn)
            elif version not in (None, _SCHEMA_VERSION):
                readable = " or ".join(f"version {v}" for v in (*_MIGRATES, _SCHEMA_VERSION))
                raise DataError(
                    f"search store {self.path} has schema version {version}, this drgym reads {readable} "
                    f"(older ones are upgraded in place); use a new file (or the drgym version that wrote it)"
                )
            _create_schema(conn)
            conn.execute(
                "INSERT OR REPLACE INTO drgym_meta (key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,)
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _schema(conn: sqlite3.Connection, tables: set[str]) -> str | None:
        if "drgym_meta" not in tables:
            return None
        row = conn.execute("SELECT value FROM drgym_meta WHERE key = 'schema'").fetchone()
        return None if row is None else str(row[0])

    def _migrate_v1(self, conn: sqlite3.Connection) -> None:
        """Schema 1 (two tables, raw keys, no options) to 2; old entries are kept pinned, as recordings."""
        _create_schema(conn)
        insert = (
            "INSERT OR IGNORE INTO entries (kind, backend, key, k, options, payload, is_error, size, created, "
            "accessed, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
        )
        for backend, query, k, payload, created in conn.execute(
            "SELECT backend, query, k, payload, created FROM searches"
        ).fetchall():
            key = _search_key(bytes(query).decode("utf-8", "surrogatepass"))
            is_error = int(payload.startswith('{"error"'))
            row = (
                "search",
                backend,
                key,
                k,
                "{}",
                payload,
                is_error,
                len(payload) + len(key),
                created,
                created,
            )
            conn.execute(insert, row)
        for backend, url, payload, created in conn.execute(
            "SELECT backend, url, payload, created FROM documents"
        ).fetchall():
            key = _url_key(bytes(url).decode("utf-8", "surrogatepass"))
            is_error = int(payload.startswith('{"error"'))
            row = (
                "document",
                backend,
                key,
                0,
                "",
                payload,
                is_error,
                len(payload) + len(key),
                created,
                created,
            )
            conn.execute(insert, row)
        conn.execute("DROP TABLE searches")
        conn.execute("DROP TABLE documents")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError(f"search store {self.path} is closed")
        return self._conn

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return self._retry(lambda: conn.execute(sql, args).fetchall())
            except sqlite3.DatabaseError as exc:
                raise self._failure(exc) from exc

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction: all of it is committed, or none of it."""
        with self._lock:
            conn = self._connection()

            def attempt() -> _T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                return out

            try:
                return self._retry(attempt)
            except sqlite3.DatabaseError as exc:
                raise self._failure(exc) from exc

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        """Close the connection (async spelling)."""
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"SearchStore({str(self.path)!r})"

    # ----------------------------------------------------------------- entries (sync; run in worker threads)

    def _decode(self, kind: str, row: tuple[Any, ...]) -> StoredEntry:
        _, payload, created, _, pinned = row
        try:
            data = json.loads(payload)
            if "error" in data:
                err = data["error"]
                base = err.get("base")
                return StoredEntry(
                    None, str(err["type"]), str(err["message"]), created, bool(pinned), base and str(base)
                )
            return StoredEntry(_DECODERS[kind](data["value"]), None, None, created, bool(pinned))
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(exc) from exc

    def _get(
        self,
        kind: str,
        backend: str,
        key: bytes,
        k: int,
        options: str,
        *,
        max_age_s: float | None,
        touch: bool,
        serve_errors: bool,
        record: bool,
        episode: str | None,
    ) -> StoredEntry | None:
        args = (kind, backend, key, k, options)
        now = time.time()

        def usable(row: tuple[Any, ...] | None) -> bool:
            if row is None or (row[3] and not serve_errors):
                return False
            return bool(row[4]) or max_age_s is None or now - row[2] <= max_age_s

        if not (touch or record):
            rows = self._read(f"SELECT {_COLUMNS} FROM entries WHERE {_WHERE_KEY}", args)
            return self._decode(kind, rows[0]) if rows and usable(rows[0]) else None

        def tx(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE {_WHERE_KEY}", args).fetchone()
            if not usable(row):
                _bump(conn, f"{kind}_misses")
                return None
            pin = 1 if record else row[4]
            conn.execute(
                "UPDATE entries SET accessed = ?, hits = hits + 1, pinned = ? WHERE id = ?",
                (now, pin, row[0]),
            )
            if record and episode is not None:
                _link(conn, episode, row[0])
            return (*row[:4], pin)

        found = self._write(tx)
        return None if found is None else self._decode(kind, found)

    def _put(
        self,
        kind: str,
        backend: str,
        key: bytes,
        k: int,
        options: str,
        payload: str,
        *,
        record: bool,
        episode: str | None,
        evict: bool,
    ) -> StoredEntry | None:
        now = time.time()
        args = (kind, backend, key, k, options)
        is_error = int(payload.startswith('{"error"'))

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
                kept = conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE {_WHERE_KEY}", args).fetchone()
                entry_id = kept[0]
                conn.execute("UPDATE entries SET accessed = ? WHERE id = ?", (now, entry_id))
            if record and episode is not None:
                _link(conn, episode, entry_id)
            if evict:
                self._evict(conn)
            return kept

        kept = self._write(tx)
        return None if kept is None else self._decode(kind, kept)

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Delete unpinned entries, least recently used first, until the caps hold (or only pinned ones remain)."""
        if self.max_bytes is None and self.max_entries is None:
            return 0
        count, total = conn.execute("SELECT entries, bytes FROM totals WHERE id = 1").fetchone()
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
        return self._get(
            "search",
            backend,
            _search_key(query),
            k,
            options_key(options),
            max_age_s=max_age_s,
            touch=touch,
            serve_errors=serve_errors,
            record=record,
            episode=episode,
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
            ``None`` when this answer was stored; the entry already stored, when a pinned one was kept instead.
        """
        return self._put(
            "search",
            backend,
            _search_key(query),
            k,
            options_key(options),
            _payload(_results_to_obj(results or []), error),
            record=record,
            episode=episode,
            evict=evict,
        )

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
        return self._get(
            "document",
            backend,
            _url_key(url),
            0,
            "",
            max_age_s=max_age_s,
            touch=touch,
            serve_errors=serve_errors,
            record=record,
            episode=episode,
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
        value = _doc_to_obj(document) if document is not None else None
        return self._put(
            "document",
            backend,
            _url_key(url),
            0,
            "",
            _payload(value, error),
            record=record,
            episode=episode,
            evict=evict,
        )

    # ----------------------------------------------------------------- maintenance and inspection

    def backends_sync(self) -> list[str]:
        """Names of the backends with anything stored."""
        return [row[0] for row in self._read("SELECT DISTINCT backend FROM entries ORDER BY backend")]

    def search_options_sync(self, backend: str) -> list[str]:
        """The distinct provider-option keys that ``backend``'s searches were stored with."""
        rows = self._read(
            "SELECT DISTINCT options FROM entries WHERE kind = 'search' AND backend = ? ORDER BY options",
            (backend,),
        )
        return [row[0] for row in rows]

    def episodes_sync(self) -> list[str]:
        """Ids of the episodes recorded in the store."""
        return [row[0] for row in self._read("SELECT DISTINCT episode FROM episode_entries ORDER BY episode")]

    def counts_sync(self) -> dict[str, int]:
        """How many searches and documents are stored."""
        rows = dict(self._read("SELECT kind, COUNT(*) FROM entries GROUP BY kind"))
        return {"searches": rows.get("search", 0), "documents": rows.get("document", 0)}

    def purge_sync(self, max_age_s: float, *, keep_recorded: bool = True) -> int:
        """Delete entries older than ``max_age_s`` seconds (unpinned ones only by default); return how many."""
        cutoff = time.time() - max_age_s
        pinned = "AND pinned = 0" if keep_recorded else ""
        return self._write(
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

        done = self._write(tx)
        if vacuum:
            with self._lock:
                conn = self._connection()
                try:
                    self._retry(lambda: conn.execute("VACUUM"))
                    self._retry(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
                except sqlite3.DatabaseError as exc:
                    raise self._failure(exc) from exc
        return done

    def stats_sync(self) -> dict[str, Any]:
        """Entries by kind and backend, bytes, age range, episodes, hit and miss counts, size on disk."""
        by_backend: dict[str, dict[str, Any]] = {}
        rows = self._read(
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
        ((count, total),) = self._read("SELECT entries, bytes FROM totals WHERE id = 1")
        oldest, newest, hits, pinned = self._read(
            "SELECT MIN(created), MAX(created), COALESCE(SUM(hits), 0), COALESCE(SUM(pinned), 0) FROM entries"
        )[0]
        counters = dict(self._read("SELECT name, value FROM counters"))
        episodes = self._read("SELECT COUNT(DISTINCT episode) FROM episode_entries")[0][0]
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
        conn = self._open_connection(setup=False)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            conn.execute("BEGIN")  # one snapshot for every query below
            where, args = ("", ())
            if episode is not None:
                if (
                    conn.execute(
                        "SELECT 1 FROM episode_entries WHERE episode = ? LIMIT 1", (episode,)
                    ).fetchone()
                    is None
                ):
                    known = [
                        r[0] for r in conn.execute("SELECT DISTINCT episode FROM episode_entries LIMIT 6")
                    ]
                    raise DataError(
                        f"no episode {episode!r} recorded in {self.path}; recorded episodes include: "
                        f"{', '.join(map(repr, known[:5])) or 'none'}"
                    )
                where, args = " WHERE id IN (SELECT entry FROM episode_entries WHERE episode = ?)", (episode,)
            links: dict[int, list[str]] = {}
            link_sql = "SELECT entry, episode FROM episode_entries" + (
                " WHERE episode = ?" if episode else ""
            )
            for entry_id, ep in conn.execute(link_sql + " ORDER BY episode", args):
                links.setdefault(entry_id, []).append(ep)
            count = conn.execute(f"SELECT COUNT(*) FROM entries{where}", args).fetchone()[0]
            header = {
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "entries": count,
                "episode": episode,
                "exported": time.time(),
            }
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write((_dumps(header) + "\n").encode("ascii"))
                rows = conn.execute(
                    "SELECT id, kind, backend, key, k, options, payload, created, accessed, hits, pinned "
                    f"FROM entries{where} ORDER BY id",
                    args,
                )
                for (
                    entry_id,
                    kind,
                    backend,
                    key,
                    k,
                    options,
                    payload,
                    created,
                    accessed,
                    hits,
                    pinned,
                ) in rows:
                    line = {
                        "kind": kind,
                        "backend": backend,
                        "key": bytes(key).decode("utf-8", "surrogatepass"),
                        "k": k,
                        "options": options,
                        "payload": payload,
                        "created": created,
                        "accessed": accessed,
                        "hits": hits,
                        "pinned": bool(pinned),
                        "episodes": links.get(entry_id, []),
                    }
                    gz.write((_dumps(line) + "\n").encode("ascii"))
                gz.write((_dumps({"end": True, "entries": count}) + "\n").encode("ascii"))
            conn.execute("COMMIT")
            os.replace(tmp, target)
            return count
        except OSError as exc:
            raise DataError(f"cannot write the export {target}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc) from exc
        finally:
            conn.close()
            with contextlib.suppress(OSError):
                tmp.unlink()

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
            done = {
                "entries": 0,
                "added": 0,
                "updated": 0,
                "kept": 0,
                "conflicts": 0,
                "episodes": 0,
                "evicted": 0,
            }
            episodes: set[str] = set()
            for item in _read_export(path):
                done["entries"] += 1
                outcome, entry_id = _merge(conn, item)
                done[outcome] += 1
                if outcome == "kept" and item["_differs"]:
                    done["conflicts"] += 1
                for ep in item["episodes"]:
                    _link(conn, ep, entry_id)
                    episodes.add(ep)
            done["episodes"] = len(episodes)
            done["evicted"] = self._evict(conn)
            return done

        try:
            return self._write(tx)
        except _BadExport as exc:
            raise DataError(f"cannot import {path}: {exc}; nothing was imported") from None

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


# --------------------------------------------------------------------------- transaction helpers


def _create_schema(conn: sqlite3.Connection) -> None:
    # Statement by statement: ``executescript`` would commit the open transaction first.
    for statement in _SCHEMA:
        conn.execute(statement)


def _bump(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
        (name,),
    )


def _link(conn: sqlite3.Connection, episode: str, entry_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO episode_entries (episode, entry) VALUES (?, ?)", (episode, entry_id))


class _BadExport(Exception):
    """An export file that cannot be imported (the message says why)."""


def _read_export(path: Path) -> Iterator[dict[str, Any]]:
    """Validated entries of an export file; raises :class:`_BadExport` on anything wrong, even at the end."""
    try:
        with gzip.open(path, "rb") as gz:
            lines = iter(gz)
            header = _parse_line(next(lines, b""), 1)
            if header.get("format") != EXPORT_FORMAT:
                raise _BadExport(f"not a drgym search-store export (header {str(header)[:120]})")
            version = header.get("version")
            if not isinstance(version, int) or version > EXPORT_VERSION or version < 1:
                raise _BadExport(
                    f"export format version {version!r}; this drgym reads versions 1 to {EXPORT_VERSION}"
                )
            count = 0
            for number, raw in enumerate(lines, start=2):
                item = _parse_line(raw, number)
                if item.get("end") is True:
                    if item.get("entries") != count or header.get("entries") != count:
                        raise _BadExport(
                            f"the file holds {count} entries, its header says {header.get('entries')!r}"
                        )
                    if next(lines, None) is not None:
                        raise _BadExport(f"data after the end line (line {number})")
                    return
                yield _check_entry(item, number)
                count += 1
            raise _BadExport(f"truncated: no end line after {count} entries")
    except _BadExport:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise _BadExport(f"not a readable gzip file ({type(exc).__name__}: {exc})") from None


def _parse_line(raw: bytes, number: int) -> dict[str, Any]:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        raise _BadExport(f"line {number} is not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise _BadExport(f"line {number} is not a JSON object")
    return item


def _check_entry(item: dict[str, Any], number: int) -> dict[str, Any]:
    checks = {
        "kind": lambda v: v in KINDS,
        "backend": lambda v: isinstance(v, str),
        "key": lambda v: isinstance(v, str),
        "k": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "options": lambda v: isinstance(v, str),
        "payload": lambda v: isinstance(v, str),
        "created": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "pinned": lambda v: isinstance(v, bool),
        "episodes": lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v),
    }
    for field, ok in checks.items():
        if field not in item or not ok(item[field]):
            raise _BadExport(f"line {number}: missing or invalid {field!r}")
    try:
        payload = json.loads(item["payload"])
        if not isinstance(payload, dict) or not ("value" in payload or "error" in payload):
            raise ValueError("neither a value nor an error")
        item["_key"] = _key(item["key"])
    except (ValueError, UnicodeEncodeError) as exc:
        raise _BadExport(f"line {number}: bad payload or key ({exc})") from None
    item["_is_error"] = int("error" in payload)
    accessed = item.get("accessed")
    item["accessed"] = accessed if isinstance(accessed, (int, float)) else item["created"]
    hits = item.get("hits")
    item["hits"] = hits if isinstance(hits, int) and hits >= 0 else 0
    return item


def _merge(conn: sqlite3.Connection, item: dict[str, Any]) -> tuple[str, int]:
    """Insert or merge one imported entry; return ``(added|updated|kept, entry id)``."""
    args = (item["kind"], item["backend"], item["_key"], item["k"], item["options"])
    row = conn.execute(
        f"SELECT id, payload, created, pinned FROM entries WHERE {_WHERE_KEY}", args
    ).fetchone()
    values = (
        item["payload"],
        item["_is_error"],
        len(item["payload"]) + len(item["_key"]),
        item["created"],
        item["accessed"],
        item["hits"],
        int(item["pinned"]),
    )
    item["_differs"] = row is not None and row[1] != item["payload"]
    if row is None:
        cursor = conn.execute(
            "INSERT INTO entries (kind, backend, key, k, options, payload, is_error, size, created, accessed, "
            "hits, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*args, *values),
        )
        return "added", int(cursor.lastrowid or 0)
    entry_id, _, created, pinned = row
    if not pinned and (item["pinned"] or item["created"] > created):
        conn.execute(
            "UPDATE entries SET payload = ?, is_error = ?, size = ?, created = ?, accessed = ?, hits = ?, "
            "pinned = ? WHERE id = ?",
            (*values, entry_id),
        )
        return "updated", entry_id
    return "kept", entry_id
