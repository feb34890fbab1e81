"""The SQLite connection under a search store: opening the file, transactions, and what a failure means.

One connection per store is shared behind a lock by the worker threads the store's async API runs in. Writes
are ``BEGIN IMMEDIATE`` transactions retried while another process holds the lock; a process killed mid-write
loses only its uncommitted transaction (WAL recovery on the next open). Every SQLite failure comes out as a
:class:`~drgym.errors.DataError` naming the file: corrupt or foreign files with what to do about them,
operational failures as they are, and a write the disk refuses (full, read-only, I/O error) as
:class:`StoreUnwritable`, which the store turns into a skipped write rather than a failed call.

A file that cannot be written here (a read-only mount, a file or folder without write permission) is opened
read-only: WAL mode would need ``-wal``/``-shm`` side files it cannot create, so SQLite is told the file is
immutable (``?mode=ro&immutable=1``) unless a ``-wal`` file with content sits beside it (then plain
``mode=ro``, which reads it). Replay and inspection work on such files; writes raise :class:`StoreUnwritable`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from drgym.errors import DataError
from drgym.search._cache_schema import check as check_schema
from drgym.search._cache_schema import setup as setup_schema

__all__ = ["StoreFile", "StoreUnwritable", "why_read_only"]

logger = logging.getLogger("drgym.search.cache")

# Failures that say the disk will not take a write now (full, read-only, I/O), not that the file is bad.
_UNWRITABLE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR})

_T = TypeVar("_T")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_unwritable(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNWRITABLE


class StoreUnwritable(DataError):
    """The store could not write (disk full, read-only file or mount, I/O error); what is stored is intact."""


def why_read_only(path: Path) -> str | None:
    """Why an existing store file cannot be written here (read-only mount, no write permission), or ``None``.

    The folder counts too: WAL mode creates its side files beside the database.
    """
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return "the file is not writable"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"its folder {path.parent} is not writable"
    return None


class StoreFile:
    """The open SQLite file of one store.

    Args:
        path: The database file (created, with its folder, if missing and writable).
        busy_timeout_s: How long a call waits for another process's write lock before failing.

    Raises:
        DataError: the file cannot be opened, is corrupt, another program's database, or of an unknown schema.

    Attributes:
        read_only: Why the file is open read-only (see the module docstring), or ``None``.
        degraded: Why the last write was skipped (disk full, read-only ...), or ``None`` once a write succeeds.
        skipped_writes: Writes skipped because the disk refused them, since the file was opened.

    A store file that the disk refuses to open for writing (a full disk has no room for the ``-wal`` and
    ``-shm`` files) is opened read-only instead; each later write first tries to open it writable again, so
    the store recovers by itself once there is room.
    """

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.read_only = why_read_only(path) if path.is_file() else None
        self.degraded: str | None = None
        self.skipped_writes = 0
        self._reopen = False  # read-only only because the disk refused the open: try writable again
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            try:
                self._conn = self.connect(setup=True)
            except StoreUnwritable as exc:
                if self.read_only is not None or not path.is_file():
                    raise
                self.read_only, self._reopen = f"the disk refused to open it for writing ({exc})", True
                self._conn = self.connect(setup=True)
                self.degraded = str(exc)
                logger.warning("%s; opened read-only, serving what it holds until it can write again", exc)

    # ----------------------------------------------------------------- errors

    def corrupt(self, exc: BaseException) -> DataError:
        """The error for a file SQLite cannot read (or a payload that is not ours), with what to do."""
        return DataError(
            f"search store {self.path} is not a readable SQLite database ({exc}). If it is a cache, delete "
            f"the file (and its -wal/-shm files) and it will be rebuilt; if it is a recording, restore it "
            f"from a copy."
        )

    def failure(self, exc: sqlite3.DatabaseError, *, writing: bool = True) -> DataError:
        """The error for a SQLite failure (while ``writing``, a refusal of the disk is :class:`StoreUnwritable`)."""
        if writing and _is_unwritable(exc):
            return StoreUnwritable(f"search store {self.path} cannot be written: {exc}")
        # An operational failure (locking, a file that vanished) is not a corrupt file: say which it is.
        if isinstance(exc, sqlite3.OperationalError):
            return DataError(f"search store {self.path} could not be used: {exc}")
        return self.corrupt(exc)

    def _refused(self, exc: StoreUnwritable) -> StoreUnwritable:
        """Note a write the disk refused (under the lock); logged once when the store starts degrading."""
        self.skipped_writes += 1
        if self.degraded is None:
            logger.warning("%s; serving what it holds and skipping writes until it can write again", exc)
        self.degraded = str(exc)
        return exc

    def _wrote(self) -> None:
        if self.degraded is not None:
            self.degraded = None
            logger.info("search store %s can be written again", self.path)

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
        """A new connection to the file; ``setup`` creates or checks the schema first (else: already done).

        The caller owns (and closes) it: the export reads its snapshot on one of its own.
        """
        timeout = min(5.0, self.busy_timeout_s)
        try:
            if self.read_only is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                target: str | Path = self.path
            else:
                target = self._read_only_uri()
            conn = sqlite3.connect(
                target,
                check_same_thread=False,
                isolation_level=None,
                timeout=timeout,
                uri=self.read_only is not None,
            )
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"cannot open search store {self.path}: {exc}") from exc
        try:
            if setup and self.read_only is None:
                self.retry(lambda: setup_schema(conn, self.path))
            elif setup:
                self.retry(lambda: check_schema(conn, self.path))
            else:
                conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        except DataError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self.failure(exc, writing=self.read_only is None) from exc
        return conn

    def _reopen_writable(self) -> bool:
        """Open the file writable again in place of the read-only connection; whether it worked (under the lock)."""
        read_only, self.read_only = self.read_only, None
        try:
            conn = self.connect(setup=True)
        except StoreUnwritable:
            self.read_only = read_only
            return False
        if self._conn is not None:
            self._conn.close()
        self._conn, self._reopen = conn, False
        return True

    def _read_only_uri(self) -> str:
        wal = Path(f"{self.path}-wal")
        pending = wal.is_file() and wal.stat().st_size > 0
        # immutable: no locks and no -shm, which a read-only folder cannot hold. A -wal with content holds
        # committed entries an immutable open would not see: read it (SQLite needs its -shm beside it then).
        mode = "mode=ro" if pending else "mode=ro&immutable=1"
        return f"file:{quote(str(self.path.resolve()))}?{mode}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError(f"search store {self.path} is closed")
        return self._conn

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of one query on the shared connection."""
        return self.query(lambda conn: conn.execute(sql, args).fetchall())

    def query(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn``, which only reads, on the shared connection (no transaction of its own)."""
        with self._lock:
            conn = self._connection()
            try:
                return self.retry(lambda: fn(conn))
            except sqlite3.DatabaseError as exc:
                raise self.failure(exc, writing=False) from exc

    def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction: all of it is committed, or none of it.

        Raises:
            StoreUnwritable: the disk refused the write (nothing of it is committed), or the file is read-only.
            DataError: any other failure.
        """
        with self._lock:
            self._connection()  # a closed store is an error, not a refused write
            if self.read_only is not None and not (self._reopen and self._reopen_writable()):
                raise self._refused(
                    StoreUnwritable(f"search store {self.path} cannot be written: {self.read_only}")
                )
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
                out = self.retry(attempt)
            except sqlite3.DatabaseError as exc:
                error = self.failure(exc)
                raise (self._refused(error) if isinstance(error, StoreUnwritable) else error) from exc
            self._wrote()
            return out

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
