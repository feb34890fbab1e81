"""Crash safety and several processes on one store: real subprocesses, real ``kill -9``, real file locks."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drgym.errors import DataError
from drgym.search.base import Result
from drgym.search.cache import SearchStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")

# Writes entries in a loop, printing each index only once its transaction has committed.
WRITER = textwrap.dedent(
    """
    import sys
    from drgym.document import Document
    from drgym.search.base import Result
    from drgym.search.cache import SearchStore

    store = SearchStore(sys.argv[1])
    i = int(sys.argv[2])
    while True:
        body = f"page {i} " + "x" * (i % 7) * 9000  # sizes vary, so writes span one to many pages
        store.put_search_sync("crash", f"query {i}", 10, [Result(f"t{i}", f"https://c.example/{i}", body)],
                              record=i % 2 == 0, episode=f"ep{i % 3}", evict=i % 2 == 1)
        store.put_document_sync("crash", f"https://c.example/{i}", Document(f"https://c.example/{i}", "T", body))
        print(i, flush=True)
        i += 1
    """
)

# Writes its own entries and reads (and touches) the other process's, as two env workers sharing a cache do.
WORKER = textwrap.dedent(
    """
    import random, sys
    from drgym.search.base import Result
    from drgym.search.cache import SearchStore

    path, me, other, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cap = int(sys.argv[5]) or None
    store = SearchStore(path, max_entries=cap)
    rng = random.Random(me)
    seen = 0
    for i in range(n):
        store.put_search_sync("b", f"{me} {i}", 10, [Result(f"{me}{i}", "https://w.example/", "s" * 500)],
                              evict=cap is not None, record=cap is None and i % 5 == 0, episode=me)
        entry = store.get_search_sync("b", f"{other} {rng.randrange(n)}", 10, touch=True)
        seen += entry is not None
        mine = store.get_search_sync("b", f"{me} {i}", 10)
        assert cap is not None or mine.value[0].title == f"{me}{i}", mine
    print(seen, flush=True)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _kill_after(path: Path, start: int, lines: int, rng: random.Random) -> list[int]:
    """Run the writer, kill -9 it after ``lines`` commits (plus a random moment); return every index it committed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None
    committed = []
    while len(committed) < lines:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"writer died: {proc.stderr.read().decode() if proc.stderr else ''}")
        committed.append(int(line))
    time.sleep(rng.uniform(0, 0.01))  # land somewhere inside a later write
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    committed += [int(x) for x in rest.split()]  # printed before the kill, so committed too
    assert proc.returncode == -signal.SIGKILL
    return committed


def test_kill_9_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    rng = random.Random(7)
    committed: list[int] = []
    for round_ in range(3):
        start = committed[-1] + 1 if committed else 0
        committed += _kill_after(path, start, 40 + 20 * round_, rng)
        assert Path(f"{path}-wal").exists(), "killed with its write-ahead log still open"

        store = SearchStore(path)  # opens cleanly: WAL recovery
        for i in committed:
            body = f"page {i} " + "x" * (i % 7) * 9000
            entry = store.get_search_sync("crash", f"query {i}", 10)
            assert entry is not None and entry.value == [Result(f"t{i}", f"https://c.example/{i}", body)], i
            assert entry.pinned == (i % 2 == 0)
            assert store.get_document_sync("crash", f"https://c.example/{i}").value.content == body
        stats = store.stats_sync()
        assert stats["episodes"] == 3
        store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            count, size = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
            assert (count, size) == (stats["entries"], stats["bytes"]), "totals are kept in each transaction"
            orphans = conn.execute(
                "SELECT COUNT(*) FROM episode_entries WHERE entry NOT IN (SELECT id FROM entries)"
            ).fetchone()[0]
            assert orphans == 0
        conn.close()


def test_a_torn_wal_tail_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "torn.sqlite"
    committed = _kill_after(path, 0, 25, random.Random(1))
    with open(f"{path}-wal", "ab") as wal:  # a frame half written when the power went
        wal.write(os.urandom(3000))
    store = SearchStore(path)
    assert all(store.get_search_sync("crash", f"query {i}", 10) is not None for i in committed)
    store.put_search_sync("crash", "after the crash", 1, [])
    assert store.get_search_sync("crash", "after the crash", 1) is not None
    store.close()


@pytest.mark.parametrize("cap", [0, 60], ids=["record", "capped-cache"])
def test_two_processes_write_and_read_one_store(tmp_path: Path, cap: int) -> None:
    path = tmp_path / "shared.sqlite"
    SearchStore(path).close()
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), me, other, str(n), str(cap)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        for me, other in (("alpha", "beta"), ("beta", "alpha"))
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err.decode()
        assert "locked" not in err.decode()
    store = SearchStore(path)
    stats = store.stats_sync()
    if cap:
        assert stats["entries"] == cap, "the cap holds with two processes evicting at once"
    else:
        assert stats["entries"] == 2 * n and stats["pinned"] == 2 * (n // 5)
        assert store.episodes_sync() == ["alpha", "beta"]
        assert all(store.get_search_sync("b", f"{me} {i}", 10) for me in ("alpha", "beta") for i in range(n))
        assert sum(int(out) for out, _ in outputs) > 0, "each process saw the other's entries"
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(size) FROM entries").fetchone() == (
            stats["entries"],
            stats["bytes"],
        )
    conn.close()


# Holds the write lock of a store for a while, as a busy writer in another process does.
HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def test_a_held_write_lock_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    SearchStore(path).close()
    holder = _hold_lock(path, 1.0)
    store = SearchStore(path, busy_timeout_s=20)
    started = time.monotonic()
    store.put_search_sync("b", "waited", 1, [])  # blocks until the other process commits, then succeeds
    assert time.monotonic() - started > 0.3
    assert store.get_search_sync("b", "waited", 1) is not None
    holder.wait(timeout=30)

    holder = _hold_lock(path, 30)
    impatient = SearchStore(path, busy_timeout_s=0.5)
    with pytest.raises(DataError, match=r"stayed locked by another process for 0\.5 s"):
        impatient.put_search_sync("b", "never", 1, [])
    holder.kill()  # the lock dies with its process
    holder.wait(timeout=30)
    impatient.put_search_sync("b", "now", 1, [])
    assert impatient.get_search_sync("b", "never", 1) is None
    impatient.close()
    store.close()


def test_a_damaged_store_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite"
    store = SearchStore(path)
    for i in range(200):
        store.put_search_sync("b", f"query {i}", 10, [Result(f"t{i}", f"https://d.example/{i}", "z" * 3000)])
    store.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 60] = random.Random(0).randbytes(4096 * 57)  # table and index pages overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"search store .*damaged\.sqlite (is not a readable SQLite database|could not)"
    ):
        damaged = SearchStore(path)
        for i in range(200):
            damaged.get_search_sync("b", f"query {i}", 10)
        damaged.stats_sync()
