"""Datasets and corpora: a registry of pinned upstream files, verified downloads, and loaders.

Example::

    from drgym.data import load_corpus, load_dataset

    questions = load_dataset("deepresearcher-dev", data_source=["nq", "bamboogle"], limit=10)
    passages = load_corpus("wiki-local")

Files are cached under ``$DRGYM_HOME/data`` (default: the user cache folder) after a sha256 check;
``DRGYM_DATA_MIRROR`` (a folder or an http(s) URL with the same layout) replaces the upstream addresses.
Parsed results are kept in memory per process; callers get copies, so they cannot alter the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drgym.data.corpus import build_wiki_local, passage_id
from drgym.data.demo import demo_files, demo_passages, demo_records
from drgym.data.fetcher import (
    afetch,
    afetch_many,
    cache_path,
    data_home,
    fetch,
    fetch_many,
    install_file,
    is_available,
)
from drgym.data.loaders import normalise_source, parse_dataset
from drgym.data.records import Passage, QARecord
from drgym.data.registry import SPECS, get_file, get_spec, unknown_name_error
from drgym.errors import ConfigError

__all__ = [
    "Passage",
    "QARecord",
    "adownload",
    "afetch",
    "aload_corpus",
    "aload_dataset",
    "cache_path",
    "data_home",
    "dataset_info",
    "download",
    "fetch",
    "install_file",
    "list_corpora",
    "list_datasets",
    "load_corpus",
    "load_dataset",
    "passage_id",
]


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(name for name, spec in SPECS.items() if "dataset" in spec.kinds)


def list_corpora() -> list[str]:
    """Names accepted by :func:`load_corpus`, sorted."""
    return sorted(name for name, spec in SPECS.items() if "corpus" in spec.kinds)


def dataset_info(name: str) -> dict[str, Any]:
    """What a dataset or corpus is, for tables and ``--help``: description, files, licence, size, cache state."""
    spec = get_spec(name)
    files = [
        {
            "relpath": f.relpath,
            "url": f.url,
            "sha256": f.sha256,
            "bytes": f.size,
            "licence": f.licence,
            "available": is_available(f.relpath),
        }
        for f in (get_file(r) for r in spec.files)
    ]
    return {
        "name": spec.name,
        "kinds": list(spec.kinds),
        "description": spec.description,
        "licence": spec.licence,
        "size": spec.size,
        "bytes": sum(f["bytes"] for f in files),
        "files": files,
        "available": all(f["available"] for f in files),
    }


def _file_paths(name: str) -> list[Path]:
    spec = get_spec(name)
    return demo_files() if name == "demo" else fetch_many(spec.files)


@functools.cache
def _records(name: str) -> tuple[QARecord, ...]:
    if name == "demo":
        return tuple(demo_records())
    return tuple(parse_dataset(name, _file_paths(name)))


@functools.cache
def _passages(name: str) -> tuple[Passage, ...]:
    if name == "demo":
        return tuple(demo_passages())
    spec = get_spec(name, "corpus")
    return tuple(build_wiki_local(zip(spec.files, fetch_many(spec.files))))


def _copy(record: QARecord) -> QARecord:
    # Metadata values are immutable (str, int, tuple), so copying the dict and the answers list suffices.
    return dataclasses.replace(record, answers=list(record.answers), metadata=dict(record.metadata))


def _wanted_sources(name: str, records: Sequence[QARecord], data_source: str | Sequence[str]) -> set[str]:
    requested = [data_source] if isinstance(data_source, str) else list(data_source)
    present = sorted({r.source for r in records})
    wanted = set()
    for item in requested:
        if not isinstance(item, str):
            raise ConfigError(f"data_source must be a string or a sequence of strings, got {item!r}")
        source = normalise_source(item)
        if source not in present:
            raise unknown_name_error(f"data_source for dataset {name!r}", item, present)
        wanted.add(source)
    return wanted


def load_dataset(
    name: str, *, data_source: str | Sequence[str] | None = None, limit: int | None = None
) -> list[QARecord]:
    """Load a dataset's questions, downloading and verifying its files on first use.

    Args:
        name: A name from :func:`list_datasets`.
        data_source: Keep only these sources (``"nq"``, ``["hotpotqa", "2wiki"]``; case-insensitive, and
            ``triviaqa`` means ``tq``).
        limit: Keep only the first ``limit`` records (after filtering), in file order.

    Raises:
        ConfigError: Unknown name or data source, or a negative limit.
        DataError: The files cannot be fetched or parsed (ChecksumError and DownloadError among them).
    """
    get_spec(name, "dataset")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
    records: Sequence[QARecord] = _records(name)
    if data_source is not None:
        wanted = _wanted_sources(name, records, data_source)
        records = [r for r in records if r.source in wanted]
    if limit is not None:
        records = records[:limit]
    return [_copy(r) for r in records]


def load_corpus(name: str) -> list[Passage]:
    """Load a corpus's passages (frozen, de-duplicated, with stable hash ids), fetching its files if needed."""
    get_spec(name, "corpus")
    return list(_passages(name))


async def _afetch_spec(name: str, kind: str) -> None:
    spec = get_spec(name, kind)
    if spec.files:
        await afetch_many(spec.files)


async def aload_dataset(
    name: str, *, data_source: str | Sequence[str] | None = None, limit: int | None = None
) -> list[QARecord]:
    """Async :func:`load_dataset`: downloads on the caller's loop, parses in a worker thread."""
    await _afetch_spec(name, "dataset")
    return await asyncio.to_thread(load_dataset, name, data_source=data_source, limit=limit)


async def aload_corpus(name: str) -> list[Passage]:
    """Async :func:`load_corpus`: downloads on the caller's loop, parses in a worker thread."""
    await _afetch_spec(name, "corpus")
    return await asyncio.to_thread(load_corpus, name)


async def adownload(name: str) -> list[Path]:
    """Fetch every file of a dataset or corpus into the cache; returns their verified local paths."""
    spec = get_spec(name)
    if name == "demo":
        return demo_files()
    return await afetch_many(spec.files)


def download(name: str) -> list[Path]:
    """Synchronous :func:`adownload` (what ``drgym data download NAME`` calls)."""
    get_spec(name)
    return _file_paths(name)
