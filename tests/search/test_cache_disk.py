"""The store on real file systems that refuse writes: a full disk, a read-only mount, a damaged file.

The full disk is a small tmpfs filled to the last block, the read-only medium a read-only bind mount (root
ignores ``chmod``, so permissions alone prove nothing here); both need ``mount``, so these tests skip, saying
why, where the machine does not allow it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest

import drgym  # noqa: F401  (registers the env ids)
from drgym.cli import main
from drgym.errors import DataError
from drgym.search.base import Document, Result
from drgym.search.cache import SearchStore
from drgym.search.replay import ReplayBackend

RESULTS = [Result("Tidal clock", "http://tide.example/clock", "invented by Ilse Varrow")]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of this test's own."""
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command to make a small file system to fill")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        _unmount(disk)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``(source, view)``: a writable folder, and a read-only bind mount of it."""
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command to make a read-only mount")
    source, view = tmp_path / "source", tmp_path / "view"
    source.mkdir()
    view.mkdir()
    done = _mount("--bind", str(source), str(view))
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder (needs root): {done.stderr.strip()}")
    try:
        done = _mount("-o", "remount,bind,ro", str(view))
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
        yield source, view
    finally:
        _unmount(view)


def _fill(disk: Path) -> Path:
    """Write a file until the file system has no block left; return it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return filler


def _search(*queries: str) -> str:
    call = {"name": "web_search", "arguments": {"query": list(queries)}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


# ----------------------------------------------------------------------------- a full disk


def test_a_full_store_serves_hits_and_skips_writes_then_recovers(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SearchStore(small_disk / "cache.sqlite")
    store.put_search_sync("b", "old", 10, RESULTS, evict=True)
    store.put_document_sync(
        "b", "http://tide.example/clock", Document("http://tide.example/clock", "T", "1824")
    )
    filler = _fill(small_disk)
    caplog.set_level(logging.WARNING, logger="drgym.search.cache")

    hit = store.get_search_sync("b", "old", 10, touch=True)  # a hit writes (hit count, LRU time)
    assert hit is not None and hit.value == RESULTS
    assert store.degraded is not None and "database or disk is full" in store.degraded
    assert str(small_disk / "cache.sqlite") in store.degraded
    recorded = store.get_document_sync("b", "http://tide.example/clock", touch=True, record=True, episode="e")
    assert recorded is not None and recorded.value.content == "1824"
    for i in range(5):
        assert store.put_search_sync("b", f"new {i}", 10, RESULTS, evict=True) is None
        assert store.put_search_sync("b", f"rec {i}", 10, RESULTS, record=True, episode="e") is None
    assert store.skipped_writes == 12
    assert [r.levelname for r in caplog.records] == ["WARNING"], "logged once, not per call"

    filler.unlink()
    assert store.put_search_sync("b", "after", 10, RESULTS, evict=True) is None
    assert store.degraded is None and store.get_search_sync("b", "after", 10).value == RESULTS
    assert store.get_search_sync("b", "new 0", 10) is None, "a skipped write stored nothing"
    assert store.counts_sync() == {"searches": 2, "documents": 1}
    store.close()


def test_an_env_whose_cache_disk_fills_keeps_its_searches_and_says_so(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = gym.make(
        "drgym/WebResearch-v0",
        dataset="demo",
        search="miniweb",
        search_kwargs={"corpus": "demo"},
        cache_path=str(small_disk / "cache.sqlite"),
    )
    try:
        env.reset(options={"index": 0})
        obs, _, _, _, info = env.step(_search("tidal clock inventor"))
        assert "Tidal clock" in obs and info["error"] is None and info["store_degraded"] is None
        filler = _fill(small_disk)
        caplog.set_level(logging.WARNING, logger="drgym.search.cache")

        obs, _, _, _, info = env.step(_search("tidal clock inventor"))  # a cache hit
        assert "Tidal clock" in obs and info["error"] is None and info["backend_errors"] == 0
        assert info["search_usage"]["cache_hits"] == 1
        assert "database or disk is full" in info["store_degraded"]
        obs, _, _, _, info = env.step(_search("Ilse Varrow", "tidal clock 1824"))  # live, not stored
        assert "disk is full" not in obs and info["error"] is None and info["backend_errors"] == 0
        assert info["search_usage"]["calls"] == 3 and "database or disk is full" in info["store_degraded"]
        assert sum(r.levelname == "WARNING" for r in caplog.records) == 1

        filler.unlink()
        store = env.unwrapped._stores[0]
        before = store.counts_sync()["searches"]
        obs, _, _, _, info = env.step(_search("tide clock museum"))
        assert info["error"] is None and info["store_degraded"] is None
        assert store.counts_sync()["searches"] == before + 1, "writes resume once there is room"
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.close()


# ----------------------------------------------------------------------------- read-only media


def _recording(folder: Path) -> Path:
    path = folder / "run.sqlite"
    store = SearchStore(path)
    store.put_search_sync("serper", "tidal clock", 10, RESULTS, record=True, episode="q-1")
    store.put_document_sync(
        "serper",
        "http://tide.example/clock",
        Document("http://tide.example/clock", "T", "1824"),
        record=True,
        episode="q-1",
    )
    store.close()
    return path


async def test_a_recording_on_a_read_only_mount_replays(read_only_view: tuple[Path, Path]) -> None:
    source, view = read_only_view
    _recording(source)
    path = view / "run.sqlite"
    with pytest.raises(OSError):
        (view / "probe").write_text("x")  # the mount really is read-only

    replay = ReplayBackend(path)
    assert replay.store.read_only == "it is on a read-only file system"
    assert await replay.search("tidal clock", 10) == RESULTS
    assert (await replay.open("http://tide.example/clock")).content == "1824"
    await replay.aclose()
    assert sorted(os.listdir(view)) == ["run.sqlite"], "no side file was (or could be) made"

    store = SearchStore(path, create=False)
    assert store.put_search_sync("serper", "new", 10, RESULTS) is None  # a cache here: writes are skipped
    assert "read-only file system" in (store.degraded or "")
    assert store.get_search_sync("serper", "tidal clock", 10, touch=True).value == RESULTS
    assert store.episodes_sync() == ["q-1"]
    store.close()


def test_cache_stats_and_export_of_a_read_only_recording(
    read_only_view: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, view = read_only_view
    _recording(source)
    assert main(["cache", "stats", str(view / "run.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "entries    2 (1 searches, 1 documents; 2 recorded)" in out
    assert "read-only  it is on a read-only file system" in out
    assert main(["cache", "export", str(view / "run.sqlite"), str(tmp_path / "run.jsonl.gz")]) == 0
    assert "exported 2 entries" in capsys.readouterr().out


def test_a_read_only_recording_with_its_wal_still_beside_it_is_read_whole(
    read_only_view: tuple[Path, Path],
) -> None:
    """A copy taken while the recorder still ran has committed entries in its -wal file: they are served.

    (An immutable open, right for a checkpointed file, would not see them.)
    """
    source, view = read_only_view
    live = source / "live"
    live.mkdir()
    writer = SearchStore(live / "run.sqlite")
    writer.put_search_sync("serper", "in the wal", 10, RESULTS, record=True, episode="q-1")
    for name in ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm"):  # copied with the writer open
        shutil.copyfile(live / name, source / name)
    writer.close()
    assert (view / "run.sqlite-wal").stat().st_size > 0
    store = SearchStore(view / "run.sqlite", create=False)
    assert store.get_search_sync("serper", "in the wal", 10).value == RESULTS
    store.close()


# ----------------------------------------------------------------------------- a damaged store


def _drop_totals(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM totals")
    conn.close()


def test_a_store_without_its_totals_row_is_a_data_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.sqlite"
    store = SearchStore(path)
    store.put_search_sync("b", "q", 10, RESULTS)
    _drop_totals(path)  # while it is open: found where the totals are used
    with pytest.raises(DataError, match=r"store\.sqlite is damaged: its totals row is missing"):
        store.stats_sync()
    with pytest.raises(DataError, match=r"store\.sqlite is damaged: its totals row is missing"):
        store.put_search_sync("b", "q2", 10, RESULTS, evict=True)
    assert store.get_search_sync("b", "q2", 10) is None, "the failed write left nothing"
    store.close()

    with pytest.raises(
        DataError, match=r"store\.sqlite is damaged: its totals row is missing.*delete the file"
    ):
        SearchStore(path)  # and at open
    assert main(["cache", "stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"drgym: error: search store {path} is damaged" in err and "Traceback" not in err


def test_an_env_whose_store_loses_its_totals_row_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    env = gym.make(
        "drgym/WebResearch-v0",
        dataset="demo",
        search="miniweb",
        search_kwargs={"corpus": "demo"},
        cache_path=str(path),
    )
    try:
        env.reset(options={"index": 0})
        _, _, _, _, info = env.step(_search("tidal clock inventor"))
        assert info["error"] is None
        _drop_totals(path)
        obs, _, _, _, info = env.step(_search("Ilse Varrow"))
        assert "unexpectedly" not in obs and f"search store {path} is damaged" in obs
        assert info["backend_errors"] == 1
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.close()


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores chmod; the read-only mount tests above cover the same open"
)
def test_a_recording_without_write_permission_replays(tmp_path: Path) -> None:
    folder = tmp_path / "perm"
    folder.mkdir()
    path = _recording(folder)
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        store = SearchStore(path, create=False)
        assert store.read_only is not None and "not writable" in store.read_only
        assert store.get_search_sync("serper", "tidal clock", 10).value == RESULTS
        assert store.stats_sync()["entries"] == 2
        store.close()
        assert sorted(os.listdir(folder)) == ["run.sqlite"]
    finally:
        folder.chmod(0o755)


def test_a_store_opened_on_a_full_disk_serves_read_only_and_recovers(small_disk: Path) -> None:
    path = small_disk / "cache.sqlite"
    writer = SearchStore(path)
    writer.put_search_sync("b", "old", 10, RESULTS)
    writer.close()  # the -wal and -shm files go with the last connection
    filler = _fill(small_disk)  # no room left for them

    store = SearchStore(path)  # a new process's env, made while the disk is full
    assert "disk refused to open it for writing" in (store.read_only or "") and store.degraded is not None
    assert store.get_search_sync("b", "old", 10, touch=True).value == RESULTS
    assert store.put_search_sync("b", "new", 10, RESULTS, evict=True) is None and store.skipped_writes == 2

    filler.unlink()
    assert store.put_search_sync("b", "new", 10, RESULTS, evict=True) is None
    assert store.read_only is None and store.degraded is None
    assert store.get_search_sync("b", "new", 10).value == RESULTS and store.stats_sync()["entries"] == 2
    store.close()


def test_an_env_replays_a_recording_from_a_read_only_mount(read_only_view: tuple[Path, Path]) -> None:
    source, view = read_only_view
    _recording(source)
    env = gym.make(
        "drgym/WebResearch-v0", dataset="demo", search="serper", replay_path=str(view / "run.sqlite")
    )
    try:
        env.reset(options={"index": 0})
        obs, _, _, _, info = env.step(_search("tidal clock"))
        assert "invented by Ilse Varrow" in obs and info["error"] is None and info["store_degraded"] is None
        obs, _, _, _, info = env.step(_search("never recorded"))
        assert "replay miss" in obs and info["store_degraded"] is None
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.close()
