"""Portable copies of a search store: export to gzip'd JSON lines, import (merge) in one transaction.

An export starts with a header line (format, version, entry count), holds one line per entry (its key, payload,
timestamps, hit count, pin and the episodes linked to it) and ends with an end line carrying the count again, so
a truncated copy is detected on import. Keys and payloads are written as the store holds them (ASCII JSON), so a
round trip is byte-for-byte.

These functions work on a connection the caller owns; :meth:`SearchStore.export_sync
<drgym.search.cache.SearchStore.export_sync>` and :meth:`~drgym.search.cache.SearchStore.import_sync` are
the way in.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drgym.errors import DataError
from drgym.search._cache_codec import KINDS, dumps, encode_key
from drgym.search._cache_schema import WHERE_KEY, link

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "merge_export", "write_export"]

EXPORT_FORMAT = "drgym-search-store"
EXPORT_VERSION = 1

_ENTRY_FIELDS = "id, kind, backend, key, k, options, payload, created, accessed, hits, pinned"


# --------------------------------------------------------------------------- export


def write_export(
    conn: sqlite3.Connection, target: Path, *, episode: str | None, store: str | os.PathLike[str]
) -> int:
    """Write the entries of ``conn``'s store (or one episode's) to ``target``; return how many.

    Reads one snapshot (a read transaction on ``conn``, which should be a connection of its own). The file is
    written beside ``target`` and renamed into place, so ``target`` is never left half written.

    Args:
        conn: A connection to the store, with no transaction open.
        target: The export file (replaced if it exists).
        episode: Only the entries this recorded episode saw; ``None``: all of them.
        store: The store's path, for messages.

    Raises:
        DataError: ``episode`` was never recorded in the store, or ``target`` cannot be written.
        sqlite3.DatabaseError: reading the store failed (the caller names the file).
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        conn.execute("BEGIN")  # one snapshot for every query below
        where, args = "", ()
        if episode is not None:
            _check_episode(conn, episode, store)
            where, args = " WHERE id IN (SELECT entry FROM episode_entries WHERE episode = ?)", (episode,)
        links: dict[int, list[str]] = {}
        link_sql = "SELECT entry, episode FROM episode_entries" + (" WHERE episode = ?" if episode else "")
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
            gz.write((dumps(header) + "\n").encode("ascii"))
            rows = conn.execute(f"SELECT {_ENTRY_FIELDS} FROM entries{where} ORDER BY id", args)
            for entry_id, kind, backend, key, k, options, payload, created, accessed, hits, pinned in rows:
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
                gz.write((dumps(line) + "\n").encode("ascii"))
            gz.write((dumps({"end": True, "entries": count}) + "\n").encode("ascii"))
        conn.execute("COMMIT")
        os.replace(tmp, target)
        return count
    except OSError as exc:
        raise DataError(f"cannot write the export {target}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _check_episode(conn: sqlite3.Connection, episode: str, store: str | os.PathLike[str]) -> None:
    if conn.execute("SELECT 1 FROM episode_entries WHERE episode = ? LIMIT 1", (episode,)).fetchone():
        return
    known = [r[0] for r in conn.execute("SELECT DISTINCT episode FROM episode_entries LIMIT 6")]
    raise DataError(
        f"no episode {episode!r} recorded in {store}; recorded episodes include: "
        f"{', '.join(map(repr, known[:5])) or 'none'}"
    )


# --------------------------------------------------------------------------- import


def merge_export(conn: sqlite3.Connection, path: Path) -> dict[str, int]:
    """Merge the export file ``path`` into ``conn``'s store; run it inside one write transaction.

    Merge rules per entry: a new key is added; an entry already pinned here is kept (a different imported
    answer counts as a conflict); an unpinned one is replaced by an imported pinned or newer entry. Episode
    links are merged. Returns counts: ``entries``, ``added``, ``updated``, ``kept``, ``conflicts``,
    ``episodes`` and ``evicted`` (always 0 here: eviction is the store's, after the merge).

    Raises:
        DataError: the file is not an export, of a newer version, truncated or corrupt (found at any line, even
            the last): the caller's transaction must be rolled back, so that nothing is imported.
    """
    done = {"entries": 0, "added": 0, "updated": 0, "kept": 0, "conflicts": 0, "episodes": 0, "evicted": 0}
    episodes: set[str] = set()
    try:
        for item in _read_export(path):
            done["entries"] += 1
            outcome, entry_id = _merge(conn, item)
            done[outcome] += 1
            if outcome == "kept" and item["_differs"]:
                done["conflicts"] += 1
            for ep in item["episodes"]:
                link(conn, ep, entry_id)
                episodes.add(ep)
    except _BadExport as exc:
        raise DataError(f"cannot import {path}: {exc}; nothing was imported") from None
    done["episodes"] = len(episodes)
    return done


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


_CHECKS = {
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


def _check_entry(item: dict[str, Any], number: int) -> dict[str, Any]:
    for field, ok in _CHECKS.items():
        if field not in item or not ok(item[field]):
            raise _BadExport(f"line {number}: missing or invalid {field!r}")
    try:
        payload = json.loads(item["payload"])
        if not isinstance(payload, dict) or not ("value" in payload or "error" in payload):
            raise ValueError("neither a value nor an error")
        item["_key"] = encode_key(item["key"])
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
    row = conn.execute(f"SELECT id, payload, created, pinned FROM entries WHERE {WHERE_KEY}", args).fetchone()
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
