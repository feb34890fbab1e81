"""A SQLite store of search answers and opened documents, for recording, replay and the query cache.

Entries are keyed by ``(backend, query, k)`` for searches and ``(backend, url)`` for documents. Values
are JSON written with ASCII escapes, so any Python string (lone surrogates and NULs included) comes back
exactly as it went in: replay is byte-for-byte. Besides answers, a recording may hold the *error* a call
raised, so a replayed episode fails where the recorded one failed, with the same message.

SQLite runs in worker threads (:func:`asyncio.to_thread`) so the event loop never waits on the disk; one
connection is shared behind a lock, in WAL mode so readers in other processes are not blocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drgym.errors import ConfigError, DataError
from drgym.search.base import Document, Result

__all__ = ["SearchStore", "StoredEntry", "results_from_json", "results_to_json"]

_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS drgym_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS searches (
    backend TEXT NOT NULL, query BLOB NOT NULL, k INTEGER NOT NULL,
    payload TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (backend, query, k));
CREATE TABLE IF NOT EXISTS documents (
    backend TEXT NOT NULL, url BLOB NOT NULL,
    payload TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (backend, url));
"""


@dataclass(frozen=True)
class StoredEntry:
    """One stored answer: ``value`` (results or a document) or the error the call raised."""

    value: Any
    error_type: str | None
    error_message: str | None
    created: float

    @property
    def is_error(self) -> bool:
        """True when the recorded call raised instead of answering."""
        return self.error_type is not None


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


def _key(text: str) -> bytes:
    # Keys are stored as bytes so that any str (even one with lone surrogates) can be a key.
    return text.encode("utf-8", "surrogatepass")


class SearchStore:
    """The SQLite file behind recordings, replay and the query cache.

    Args:
        path: The database file.
        create: Create the file if missing; ``False`` (replay) makes a missing file an error.

    Raises:
        DataError: the file is missing (``create=False``), unreadable, corrupt, or another program's database;
            the message names the file and what to do.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        if not create and not self.path.is_file():
            raise DataError(f"no search recording at {self.path}: record one first with RecordingBackend")
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._connect()

    # ----------------------------------------------------------------- connection

    def _corrupt(self, exc: BaseException) -> DataError:
        return DataError(
            f"search store {self.path} is not a readable SQLite database ({exc}). If it is a cache, delete "
            f"the file (and its -wal/-shm files) and it will be rebuilt; if it is a recording, restore it "
            f"from a copy."
        )

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"cannot open search store {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "drgym_meta" not in tables:
                conn.close()
                raise DataError(
                    f"{self.path} is a SQLite database of another program "
                    f"(tables: {', '.join(sorted(tables))}), not a drgym search store; point the store at "
                    f"another file"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM drgym_meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO drgym_meta (key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            elif row[0] != _SCHEMA_VERSION:
                conn.close()
                raise DataError(
                    f"search store {self.path} has schema version {row[0]}, this drgym reads version "
                    f"{_SCHEMA_VERSION}; use a new file (or the drgym version that wrote it)"
                )
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._corrupt(exc) from exc
        self._conn = conn

    def _run(self, sql: str, args: tuple[Any, ...] = (), *, fetch: bool = False) -> Any:
        with self._lock:
            if self._conn is None:
                raise DataError(f"search store {self.path} is closed")
            try:
                cursor = self._conn.execute(sql, args)
                return cursor.fetchall() if fetch else cursor.rowcount
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise DataError(
                        f"search store {self.path} stayed locked by another process: {exc}"
                    ) from exc
                raise self._corrupt(exc) from exc

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

    # ----------------------------------------------------------------- sync API (runs in worker threads)

    def _entry(
        self, rows: list[tuple[str, float]], max_age_s: float | None, decode: Any
    ) -> StoredEntry | None:
        if not rows:
            return None
        payload, created = rows[0]
        if max_age_s is not None and time.time() - created > max_age_s:
            return None
        try:
            data = json.loads(payload)
            if "error" in data:
                err = data["error"]
                return StoredEntry(None, str(err["type"]), str(err["message"]), created)
            return StoredEntry(decode(data["value"]), None, None, created)
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(exc) from exc

    def get_search_sync(
        self, backend: str, query: str, k: int, max_age_s: float | None = None
    ) -> StoredEntry | None:
        """The stored answer for a search, or ``None`` (missing, or older than ``max_age_s``)."""
        rows = self._run(
            "SELECT payload, created FROM searches WHERE backend = ? AND query = ? AND k = ?",
            (backend, _key(query), k),
            fetch=True,
        )
        return self._entry(rows, max_age_s, _results_from_obj)

    def put_search_sync(
        self,
        backend: str,
        query: str,
        k: int,
        results: list[Result] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Store search results, or the error the search raised."""
        payload = self._payload(_results_to_obj(results or []), error)
        self._run(
            "INSERT OR REPLACE INTO searches (backend, query, k, payload, created) VALUES (?, ?, ?, ?, ?)",
            (backend, _key(query), k, payload, time.time()),
        )

    def get_document_sync(self, backend: str, url: str, max_age_s: float | None = None) -> StoredEntry | None:
        """The stored document for a URL, or ``None``."""
        rows = self._run(
            "SELECT payload, created FROM documents WHERE backend = ? AND url = ?",
            (backend, _key(url)),
            fetch=True,
        )
        return self._entry(rows, max_age_s, lambda v: Document(**v))

    def put_document_sync(
        self, backend: str, url: str, document: Document | None = None, error: BaseException | None = None
    ) -> None:
        """Store a document, or the error opening it raised."""
        payload = self._payload(_doc_to_obj(document) if document is not None else None, error)
        self._run(
            "INSERT OR REPLACE INTO documents (backend, url, payload, created) VALUES (?, ?, ?, ?)",
            (backend, _key(url), payload, time.time()),
        )

    @staticmethod
    def _payload(value: Any, error: BaseException | None) -> str:
        if error is not None:
            return _dumps({"error": {"type": type(error).__name__, "message": str(error)}})
        try:
            return _dumps({"value": value})
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def backends_sync(self) -> list[str]:
        """Names of the backends with anything stored."""
        rows = self._run("SELECT backend FROM searches UNION SELECT backend FROM documents", fetch=True)
        return sorted(row[0] for row in rows)

    def purge_sync(self, max_age_s: float) -> int:
        """Delete entries older than ``max_age_s`` seconds; return how many went."""
        cutoff = time.time() - max_age_s
        removed = self._run("DELETE FROM searches WHERE created < ?", (cutoff,))
        return removed + self._run("DELETE FROM documents WHERE created < ?", (cutoff,))

    def counts_sync(self) -> dict[str, int]:
        """How many searches and documents are stored."""
        searches = self._run("SELECT COUNT(*) FROM searches", fetch=True)[0][0]
        documents = self._run("SELECT COUNT(*) FROM documents", fetch=True)[0][0]
        return {"searches": searches, "documents": documents}

    # ----------------------------------------------------------------- async API

    async def get_search(
        self, backend: str, query: str, k: int, max_age_s: float | None = None
    ) -> StoredEntry | None:
        """Async :meth:`get_search_sync`."""
        return await asyncio.to_thread(self.get_search_sync, backend, query, k, max_age_s)

    async def put_search(
        self,
        backend: str,
        query: str,
        k: int,
        results: list[Result] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Async :meth:`put_search_sync`."""
        await asyncio.to_thread(self.put_search_sync, backend, query, k, results, error)

    async def get_document(
        self, backend: str, url: str, max_age_s: float | None = None
    ) -> StoredEntry | None:
        """Async :meth:`get_document_sync`."""
        return await asyncio.to_thread(self.get_document_sync, backend, url, max_age_s)

    async def put_document(
        self, backend: str, url: str, document: Document | None = None, error: BaseException | None = None
    ) -> None:
        """Async :meth:`put_document_sync`."""
        await asyncio.to_thread(self.put_document_sync, backend, url, document, error)

    async def purge(self, max_age_s: float) -> int:
        """Async :meth:`purge_sync`."""
        return await asyncio.to_thread(self.purge_sync, max_age_s)
