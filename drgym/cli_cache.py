"""`drgym cache` subcommands for the search/page store: stats, export, import, prune.

The store is the SQLite file named by ``cache_path`` (or ``record_path``/``replay_path``); exports are the
portable gzip'd JSON-lines files of :meth:`~drgym.search.cache.SearchStore.export_sync` (format in
:mod:`drgym.search.cache_io`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add this module's subcommands to ``sub``; return ``{command: handler}`` (a handler returns the exit code)."""
    from drgym.search.cache import DEFAULT_CACHE_TTL_S

    p = sub.add_parser("cache", help="inspect, export, import or prune a search/page cache or recording")
    csub = p.add_subparsers(dest="cache_cmd", required=True)
    s = csub.add_parser(
        "stats", help="entries by kind and backend, size, age range, episodes, hits and misses"
    )
    s.add_argument("path", help="the store's SQLite file")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    e = csub.add_parser(
        "export", help="write the store (or one episode's entries) to a portable .jsonl.gz file"
    )
    e.add_argument("path", help="the store's SQLite file")
    e.add_argument("out", help="the export file to write (replaced if it exists)")
    e.add_argument("--episode", default=None, help="only the entries this episode (its record_id) saw")
    i = csub.add_parser(
        "import", help="merge an export file into a store (created if missing), all or nothing"
    )
    i.add_argument("file", help="the export file")
    i.add_argument("path", help="the store's SQLite file")
    r = csub.add_parser(
        "prune", help="drop expired cache entries (and optionally errors), evict to a size cap"
    )
    r.add_argument("path", help="the store's SQLite file")
    r.add_argument(
        "--ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"drop unpinned entries older than this (default: {DEFAULT_CACHE_TTL_S / 86400:g} days)",
    )
    r.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="evict unpinned entries, least recently used first, down to this (default: 1 GiB)",
    )
    r.add_argument("--max-entries", type=int, default=None, help="evict unpinned entries down to this many")
    r.add_argument(
        "--errors",
        action="store_true",
        help="also drop stored errors, recorded ones included (to record those calls again)",
    )
    r.add_argument("--vacuum", action="store_true", help="give the freed space back to the disk")
    return {"cache": _cmd_cache}


def _cmd_cache(args: argparse.Namespace) -> int:
    handlers = {"stats": _stats, "export": _export, "import": _import, "prune": _prune}
    return handlers[args.cache_cmd](args)


def _existing_store(path: str, **kwargs: Any) -> Any:
    from drgym.errors import DataError
    from drgym.search.cache import SearchStore

    if not Path(path).expanduser().is_file():
        raise DataError(f"no search store at {path}")
    return SearchStore(path, create=False, **kwargs)


def _stats(args: argparse.Namespace) -> int:
    store = _existing_store(args.path)
    try:
        stats = store.stats_sync()
    finally:
        store.close()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"store      {stats['path']}")
    print(
        f"entries    {stats['entries']} ({stats['searches']} searches, {stats['documents']} documents; "
        f"{stats['pinned']} recorded)"
    )
    print(f"size       {_size(stats['bytes'])} stored, {_size(stats['disk_bytes'])} on disk")
    print(f"age        oldest {_when(stats['oldest'])}, newest {_when(stats['newest'])}")
    print(f"episodes   {stats['episodes']} recorded")
    print(f"lookups    {stats['hits']} hits, {stats['misses']} misses")
    if stats["read_only"]:
        print(f"read-only  {stats['read_only']}")
    if stats["by_backend"]:
        print(
            f"\n{'backend':24} {'kind':9} {'entries':>8} {'bytes':>10} {'errors':>7} {'recorded':>8} {'hits':>7}"
        )
        for backend, kinds in stats["by_backend"].items():
            for kind, row in kinds.items():
                print(
                    f"{backend:24} {kind:9} {row['entries']:>8} {_size(row['bytes']):>10} {row['errors']:>7} "
                    f"{row['pinned']:>8} {row['hits']:>7}"
                )
    return 0


def _export(args: argparse.Namespace) -> int:
    store = _existing_store(args.path)
    try:
        count = store.export_sync(args.out, episode=args.episode)
    finally:
        store.close()
    what = f"episode {args.episode!r}" if args.episode is not None else "the store"
    print(f"exported {count} entries of {what} to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from drgym.search.cache import SearchStore

    store = SearchStore(args.path)
    try:
        done = store.import_sync(args.file)
    finally:
        store.close()
    print(
        f"imported {done['entries']} entries from {args.file} into {args.path}: {done['added']} added, "
        f"{done['updated']} updated, {done['kept']} kept ({done['conflicts']} conflicts kept as they were), "
        f"{done['episodes']} episodes"
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from drgym.errors import ConfigError
    from drgym.search.cache import DEFAULT_CACHE_TTL_S, DEFAULT_MAX_BYTES

    ttl = DEFAULT_CACHE_TTL_S if args.ttl is None else args.ttl
    if not ttl >= 0:
        raise ConfigError(f"--ttl must be >= 0 seconds, got {args.ttl!r}")
    max_bytes = DEFAULT_MAX_BYTES if args.max_bytes is None else args.max_bytes
    store = _existing_store(args.path, max_bytes=max_bytes, max_entries=args.max_entries)
    try:
        before = store.stats_sync()
        done = store.prune_sync(ttl, errors=args.errors, vacuum=args.vacuum)
        after = store.stats_sync()
    finally:
        store.close()
    print(
        f"pruned {args.path}: {done['expired']} expired, {done['errors']} errors, {done['evicted']} evicted; "
        f"{after['entries']} entries left ({_size(before['disk_bytes'])} -> {_size(after['disk_bytes'])} on disk)"
    )
    return 0


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
