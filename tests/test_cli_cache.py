"""`drgym cache stats|export|import|prune` on real store files."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from drgym.cli import main
from drgym.document import Document
from drgym.errors import FetchError, ReplayMissError
from drgym.search.base import Result
from drgym.search.cache import SearchStore
from drgym.search.replay import ReplayBackend


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store with two recorded episodes, a recorded error, and cache entries of two ages."""
    path = tmp_path / "run.sqlite"
    store = SearchStore(path)
    store.put_search_sync(
        "serper",
        "kellport lighthouse",
        10,
        [Result("K", "https://k.example/", "s")],
        record=True,
        episode="q-alpha",
    )
    store.put_document_sync(
        "serper",
        "https://k.example/",
        Document("https://k.example/", "K", "Marta Quell"),
        record=True,
        episode="q-alpha",
    )
    store.put_search_sync(
        "serper", "tidal clock", 10, [Result("T", "https://t.example/", "s")], record=True, episode="q-beta"
    )
    store.put_document_sync(
        "serper",
        "https://t.example/",
        error=FetchError("HTTP 503 for https://t.example/"),
        record=True,
        episode="q-beta",
    )
    store.put_search_sync("brave", "old cached", 5, [Result("O", "https://o.example/", "x" * 50_000)])
    store.put_search_sync("brave", "new cached", 5, [Result("N", "https://n.example/", "s")])
    store.get_search_sync("serper", "kellport lighthouse", 10, touch=True)
    store.get_search_sync("brave", "never cached", 5, touch=True)
    store.close()
    with sqlite3.connect(path) as conn:  # the old entry was cached 30 days ago
        conn.execute("UPDATE entries SET created = created - 30 * 86400 WHERE key = ?", (b"old cached",))
    conn.close()
    return path


def test_stats(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "stats", str(store_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 6 and stats["searches"] == 4 and stats["documents"] == 2
    assert stats["pinned"] == 4 and stats["episodes"] == 2
    assert stats["hits"] == 1 and stats["misses"] == 1
    serper_docs = stats["by_backend"]["serper"]["document"]
    assert (serper_docs["entries"], serper_docs["errors"], serper_docs["pinned"], serper_docs["hits"]) == (
        2,
        1,
        2,
        0,
    )
    assert stats["by_backend"]["brave"]["search"]["entries"] == 2
    assert stats["disk_bytes"] >= stats["bytes"] > 50_000
    assert stats["newest"] - stats["oldest"] > 29 * 86400

    assert main(["cache", "stats", str(store_path)]) == 0
    text = capsys.readouterr().out
    assert "6 (4 searches, 2 documents; 4 recorded)" in text
    assert "episodes   2 recorded" in text and "1 hits, 1 misses" in text
    assert "serper" in text and "brave" in text


async def test_export_one_episode_then_import_and_replay(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alpha.jsonl.gz"
    assert main(["cache", "export", str(store_path), str(out), "--episode", "q-alpha"]) == 0
    assert f"exported 2 entries of episode 'q-alpha' to {out}" in capsys.readouterr().out
    with gzip.open(out) as f:
        header = json.loads(f.readline())
    assert header["format"] == "drgym-search-store" and header["version"] == 1 and header["entries"] == 2

    target = tmp_path / "new" / "replay.sqlite"
    assert main(["cache", "import", str(out), str(target)]) == 0
    assert "imported 2 entries" in capsys.readouterr().out
    replay = ReplayBackend(target)
    assert (await replay.search("kellport  lighthouse", 10))[0].title == "K"
    assert (await replay.open("https://k.example/")).content == "Marta Quell"
    with pytest.raises(ReplayMissError):
        await replay.search("tidal clock", 10)
    await replay.aclose()

    assert main(["cache", "export", str(store_path), str(tmp_path / "all.jsonl.gz")]) == 0
    assert main(["cache", "import", str(tmp_path / "all.jsonl.gz"), str(target)]) == 0
    text = capsys.readouterr().out
    assert "imported 6 entries" in text and "4 added, 0 updated, 2 kept (0 conflicts" in text
    merged = SearchStore(target)
    assert merged.episodes_sync() == ["q-alpha", "q-beta"] and merged.counts_sync()["searches"] == 4
    merged.close()


def test_prune(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", str(store_path)]) == 0  # default TTL: 7 days
    assert "1 expired, 0 errors, 0 evicted; 5 entries left" in capsys.readouterr().out
    assert main(["cache", "prune", str(store_path), "--errors", "--max-entries", "4", "--vacuum"]) == 0
    assert "0 expired, 1 errors, 0 evicted; 4 entries left" in capsys.readouterr().out
    assert main(["cache", "prune", str(store_path), "--max-entries", "1"]) == 0
    assert "1 evicted; 3 entries left" in capsys.readouterr().out  # recorded entries are never evicted
    store = SearchStore(store_path)
    assert store.counts_sync() == {"searches": 2, "documents": 1}
    assert store.get_search_sync("brave", "new cached", 5) is None
    assert store.get_document_sync("serper", "https://t.example/") is None, "the recorded error went"
    store.close()
    assert main(["cache", "prune", str(store_path), "--ttl", "-1"]) == 2
    assert "--ttl must be >= 0 seconds, got -1.0" in capsys.readouterr().err


def test_errors_are_clear_and_change_nothing(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.sqlite"
    assert main(["cache", "stats", str(missing)]) == 2
    assert f"drgym: error: no search store at {missing}" in capsys.readouterr().err
    assert not missing.exists()

    assert main(["cache", "export", str(store_path), str(tmp_path / "x.gz"), "--episode", "q-gamma"]) == 2
    err = capsys.readouterr().err
    assert "no episode 'q-gamma' recorded" in err and "'q-alpha', 'q-beta'" in err
    assert not (tmp_path / "x.gz").exists()

    good = tmp_path / "good.jsonl.gz"
    assert main(["cache", "export", str(store_path), str(good)]) == 0
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(good.read_bytes()[:-40])
    before = store_path.read_bytes()
    target = tmp_path / "target.sqlite"
    assert main(["cache", "import", str(cut), str(target)]) == 2
    err = capsys.readouterr().err
    assert (
        f"drgym: error: cannot import {cut}: not a readable gzip file" in err
        and "nothing was imported" in err
    )
    empty = SearchStore(target)
    assert empty.counts_sync() == {"searches": 0, "documents": 0}
    empty.close()
    assert store_path.read_bytes() == before

    not_a_store = tmp_path / "other.db"
    with sqlite3.connect(not_a_store) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    assert main(["cache", "stats", str(not_a_store)]) == 2
    assert "SQLite database of another program (tables: invoices)" in capsys.readouterr().err


def test_the_installed_command_runs(store_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "drgym.cli", "cache", "stats", str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "6 (4 searches, 2 documents; 4 recorded)" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "drgym.cli", "cache"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2 and "stats" in done.stderr and "export" in done.stderr
