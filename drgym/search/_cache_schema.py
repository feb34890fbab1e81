"""The tables of the search store, and how a file is set up (or opened read-only) and checked.

Every entry is one row of ``entries``, unique by ``(kind, backend, key, k, options)``; ``episode_entries`` links
recorded episodes to the entries they saw; ``totals`` holds the entry count and byte size, kept right by
triggers inside each transaction (so they survive concurrent writers in several processes and crashes);
``counters`` holds the miss counts; ``drgym_meta`` the schema version.

Opening a file that is already at :data:`SCHEMA_VERSION` writes nothing, so many processes open one store at
once without waiting, and a file on read-only media opens with :func:`check` alone. There is one schema
version: a file of any other is refused, never upgraded.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

from drgym.errors import DataError

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "WHERE_KEY",
    "bump",
    "check",
    "create_schema",
    "link",
    "setup",
    "totals",
]

SCHEMA_VERSION = "2"
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

COLUMNS = "id, payload, created, is_error, pinned"
"""The columns an entry is read with (what :func:`~drgym.search._cache_codec.decode_entry` needs, and more)."""
WHERE_KEY = "kind = ? AND backend = ? AND key = ? AND k = ? AND options = ?"
"""Selects the one entry of a request: arguments ``(kind, backend, key, k, options)``."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create whatever is missing of the current schema (inside the caller's transaction)."""
    # Statement by statement: ``executescript`` would commit the open transaction first.
    for statement in _SCHEMA:
        conn.execute(statement)


def bump(conn: sqlite3.Connection, name: str) -> None:
    """Add one to the counter ``name``."""
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
        (name,),
    )


def link(conn: sqlite3.Connection, episode: str, entry_id: int) -> None:
    """Record that ``episode`` saw entry ``entry_id`` (idempotent)."""
    conn.execute("INSERT OR IGNORE INTO episode_entries (episode, entry) VALUES (?, ?)", (episode, entry_id))


def totals(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> tuple[int, int]:
    """The store's ``(entries, bytes)`` totals row.

    Raises:
        DataError: the row is missing or not numbers (the file was edited or damaged).
    """
    row = conn.execute("SELECT entries, bytes FROM totals WHERE id = 1").fetchone()
    if row is None or not all(isinstance(v, int) for v in row):
        raise DataError(
            f"search store {path} is damaged: its totals row is {'missing' if row is None else 'not numbers'}. "
            f"If it is a cache, delete the file (and its -wal/-shm files) and it will be rebuilt; if it is a "
            f"recording, restore it from a copy"
        )
    return int(row[0]), int(row[1])


def check(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> None:
    """Check, reading only, that ``conn``'s file is a store of the current schema (what a read-only open does).

    Raises:
        DataError: the file is empty, another program's database, of another schema, or damaged.
    """
    tables = _tables(conn)
    _check_ours(tables, path)
    version = _version(conn, tables)
    if version is None:
        raise DataError(
            f"{path} is not a drgym search store (no schema version in it); it cannot be set up read-only"
        )
    _check_version(version, path)
    totals(conn, path)


def setup(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> None:
    """Make ``conn``'s file a store of the current schema: WAL mode, tables created when the file is new.

    Raises:
        DataError: the file is another program's database, of another schema, or damaged.
        sqlite3.Error: SQLite failed (the caller retries while busy and names the file otherwise).
    """
    tables = _tables(conn)
    _check_ours(tables, path)
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    if _version(conn, tables) == SCHEMA_VERSION:
        totals(conn, path)
        return  # the common case: no write, so many processes open the file at once without waiting
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Again, under the lock: another process may have set the file up meanwhile.
        _check_version(_version(conn, _tables(conn)), path)
        create_schema(conn)
        conn.execute("INSERT OR REPLACE INTO drgym_meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _check_ours(tables: set[str], path: str | os.PathLike[str]) -> None:
    if tables and "drgym_meta" not in tables:
        raise DataError(
            f"{path} is a SQLite database of another program "
            f"(tables: {', '.join(sorted(tables))}), not a drgym search store; point the store at "
            f"another file"
        )


def _check_version(version: str | None, path: str | os.PathLike[str]) -> None:
    if version not in (None, SCHEMA_VERSION):
        raise DataError(
            f"search store {path} has schema version {version}, this drgym reads version {SCHEMA_VERSION} "
            f"only; use a new file (or the drgym version that wrote it)"
        )


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _version(conn: sqlite3.Connection, tables: set[str]) -> str | None:
    if "drgym_meta" not in tables:
        return None
    row = conn.execute("SELECT value FROM drgym_meta WHERE key = 'schema'").fetchone()
    return None if row is None else str(row[0])
