"""The SQLite connection under a search store: opening the file, transactions, and what a failure means.

One connection per store is shared behind a lock by the worker threads the store's async API runs in. Writes
are ``BEGIN IMMEDIATE`` transactions retried while another process holds the lock; a process killed mid-write
loses only its uncommitted transaction (WAL recovery on the next open). Every SQLite failure comes out as a
:class:`~drgym.errors.DataError` naming the file: corrupt or foreign files with what to do about them,
operational failures (disk full, read-only file) as they are.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from drgym.errors import DataError
from drgym.search._cache_schema import setup as setup_schema

__all__ = ["StoreFile"]

_T = TypeVar("_T")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class StoreFile:
    """The open SQLite file of one store.

    Args:
        path: The database file (created, with its folder, if missing).
        busy_timeout_s: How long a call waits for another process's write lock before failing.

    Raises:
        DataError: the file cannot be opened, is corrupt, another program's database, or of an unknown schema.
    """

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._conn = self.connect(setup=True)

    # ----------------------------------------------------------------- errors

    def corrupt(self, exc: BaseException) -> DataError:
        """The error for a file SQLite cannot read (or a payload that is not ours), with what to do."""
        return DataError(
            f"search store {self.path} is not a readable SQLite database ({exc}). If it is a cache, delete "
            f"the file (and its -wal/-shm files) and it will be rebuilt; if it is a recording, restore it "
            f"from a copy."
        )

    def failure(self, exc: sqlite3.DatabaseError) -> DataError:
        """The error for a SQLite failure."""
        # An operational failure (disk full, read-only file, I/O error) is not a corrupt file: say which it is.
        if isinstance(exc, sqlite3.OperationalError):
            return DataError(f"search store {self.path} could not be used: {exc}")
        return self.corrupt(exc)

    def retry(self, fn: Callable[[], _T]) -> _T:
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

    # ----------------------------------------------------------------- connections

    def connect(self, *, setup: bool) -> sqlite3.Connection:
        """A new connection to the file; ``setup`` creates or upgrades the schema first (else: already done).

        The caller owns (and closes) it: the export reads its snapshot on one of its own.
        """
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
                self.retry(lambda: setup_schema(conn, self.path))
            else:
                conn.execute(f"PRAGMA busy_timeout = {int(min(5.0, self.busy_timeout_s) * 1000)}")
        except DataError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self.failure(exc) from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError(f"search store {self.path} is closed")
        return self._conn

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of one query on the shared connection."""
        with self._lock:
            conn = self._connection()
            try:
                return self.retry(lambda: conn.execute(sql, args).fetchall())
            except sqlite3.DatabaseError as exc:
                raise self.failure(exc) from exc

    def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
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
                return self.retry(attempt)
            except sqlite3.DatabaseError as exc:
                raise self.failure(exc) from exc

    def vacuum(self) -> None:
        """Rewrite the file so freed pages go back to the disk, and empty the WAL."""
        with self._lock:
            conn = self._connection()
            try:
                self.retry(lambda: conn.execute("VACUUM"))
                self.retry(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
            except sqlite3.DatabaseError as exc:
                raise self.failure(exc) from exc

    def close(self) -> None:
        """Close the shared connection; safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
