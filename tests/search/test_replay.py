"""Recording live searches and pages, exact strict replay, and the SQLite store's failure modes."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from drgym.document import Document
from drgym.errors import (
    BackendError,
    BudgetExceededError,
    ConfigError,
    DataError,
    FetchError,
    ReplayMissError,
)
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search._http import clean_text
from drgym.search.base import Result
from drgym.search.cache import SearchStore, results_from_json, results_to_json
from drgym.search.metering import Budget, Meter, MeteredBackend
from drgym.search.replay import RecordingBackend, ReplayBackend
from drgym.search.serper import SerperBackend

try:
    from .providers_server import KEYS, Fault, ProviderServer
except ImportError:  # tests/search is not a package
    from providers_server import KEYS, Fault, ProviderServer

RETRY = RetryPolicy(max_attempts=2, base_delay=0.005, max_delay=0.05, max_total_s=2.0, rng=random.Random(5))
PAGES = {
    "ada": "<html><title>Ada</title><body><p>Ada Lovelace &amp; the Analytical Engine.</p></body></html>",
    "odd": "<html><body>caf\u00e9 \u65e5\u672c \U0001f600 \\u0000 tab\there</body></html>",
}


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    async with ProviderServer() as srv:
        srv.pages.update(PAGES)
        yield srv


async def read_page(url: str) -> Document:
    """A small real page reader: HTTP GET on loopback, tags stripped."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        if resp.status != 200:
            raise FetchError(f"HTTP {resp.status} for {url}")
        text = await resp.text()
    return Document(
        url=url,
        title=url.rsplit("/", 1)[-1],
        content=clean_text(text),
        content_type="text/plain",
        source="loopback",
    )


def serper(server: ProviderServer, **kwargs) -> SerperBackend:
    return SerperBackend(
        api_key=KEYS["serper"],
        base_url=server.base_url("serper"),
        limiter=TokenBucket(1000, 100),
        retry=RETRY,
        page_opener=read_page,
        **kwargs,
    )


async def record_session(server: ProviderServer, path: Path) -> tuple[dict, dict, str]:
    """Record a few searches, pages and failures; return what the live backend answered."""
    recorder = RecordingBackend(serper(server), path)
    searches = {}
    for query, k in (("who invented the computer", 5), ("deep research", 3), ("deep research", 10)):
        searches[(query, k)] = await recorder.search(query, k)
    documents = {url: await recorder.open(url) for url in (server.page_url("ada"), server.page_url("odd"))}
    server.fail("serper", *[Fault.status_code(503)] * 2)
    with pytest.raises(BackendError) as info:
        await recorder.search("outage", 5)
    with pytest.raises(FetchError):
        await recorder.open(server.page_url("missing"))
    await recorder.aclose()
    return searches, documents, str(info.value)


async def test_record_then_replay_is_identical(tmp_path: Path, server: ProviderServer) -> None:
    path = tmp_path / "episode.sqlite"
    searches, documents, outage_message = await record_session(server, path)
    live_requests = len(server.requests)
    missing_url = server.page_url("missing")
    await server.__aexit__(None, None, None)  # no live service from here on

    replay = ReplayBackend(path)  # strict by default; the name comes from the recording
    assert replay.name == "serper"
    for (query, k), live in searches.items():
        replayed = await replay.search(query, k)
        assert replayed == live
        assert [r.extras for r in replayed] == [r.extras for r in live]
        assert results_to_json(replayed) == results_to_json(live)  # byte for byte
    for url, live_doc in documents.items():
        assert await replay.open(url) == live_doc
    # Recorded failures fail again, with the same type and message.
    with pytest.raises(BackendError) as info:
        await replay.search("outage", 5)
    assert str(info.value) == outage_message
    with pytest.raises(FetchError, match="HTTP 404"):
        await replay.open(missing_url)
    await replay.aclose()
    assert len(server.requests) == live_requests


async def test_strict_replay_misses_raise(tmp_path: Path, server: ProviderServer) -> None:
    path = tmp_path / "episode.sqlite"
    await record_session(server, path)
    replay = ReplayBackend(path)
    with pytest.raises(
        ReplayMissError,
        match=r"replay miss: no recorded search for 'never asked' \(k=5, backend "
        r"'serper'\) in .*episode\.sqlite; record it first",
    ):
        await replay.search("never asked", 5)
    with pytest.raises(ReplayMissError, match="k=4"):
        await replay.search("deep research", 4)  # same query, another k: another request
    with pytest.raises(ReplayMissError, match="no recorded page for 'https://nowhere.example/'"):
        await replay.open("https://nowhere.example/")
    await replay.aclose()


async def test_replay_options_are_checked(tmp_path: Path, server: ProviderServer) -> None:
    path = tmp_path / "two.sqlite"
    with pytest.raises(DataError, match="no search recording at .*two.sqlite"):
        ReplayBackend(path)
    store = SearchStore(path)
    with pytest.raises(ConfigError, match="holds nothing to replay"):
        ReplayBackend(store)
    store.put_search_sync("serper", "q", 1, [Result("t", "https://a.example", "s")])
    store.put_search_sync("brave", "q", 1, [])
    with pytest.raises(ConfigError, match=r"several backends \(brave, serper\); pass name=\.\.\."):
        ReplayBackend(store)
    assert await ReplayBackend(store, name="brave").search("q", 1) == []
    live = serper(server)
    with pytest.raises(ConfigError, match="strict replay answers only from the store"):
        ReplayBackend(store, inner=live)
    with pytest.raises(ConfigError, match="cache mode .* needs an inner backend"):
        ReplayBackend(store, strict=False)
    with pytest.raises(ConfigError, match="ttl_s must be > 0"):
        ReplayBackend(store, strict=False, inner=live, ttl_s=0)
    await live.aclose()
    store.close()


async def test_budget_errors_are_not_recorded(tmp_path: Path, server: ProviderServer) -> None:
    path = tmp_path / "budget.sqlite"
    live = serper(server)
    recorder = RecordingBackend(MeteredBackend(live, Meter(), Budget(per_episode=0)), path)
    with pytest.raises(BudgetExceededError):
        await recorder.search("q", 1)
    assert recorder.store.counts_sync() == {"searches": 0, "documents": 0}
    await recorder.aclose()


async def test_store_keeps_any_string_exactly(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "s.sqlite")
    weird = "lone \ud800 surrogate, NUL \x00, emoji \U0001f600, rtl \u202e, cr\r\n"
    results = [
        Result(weird, "https://x.example/" + weird, weird, {"score": 0.1 + 0.2, "nested": {"k": [1, None]}})
    ]
    await store.put_search("b", weird, 7, results)
    entry = await store.get_search("b", weird, 7)
    assert entry is not None and not entry.is_error
    assert entry.value == results and entry.value[0].extras == results[0].extras
    assert entry.value[0].extras["score"] == 0.1 + 0.2
    doc = Document(url=weird, title=weird, content=weird * 1000, content_type="text/plain", source=weird)
    await store.put_document("b", weird, doc)
    assert (await store.get_document("b", weird)).value == doc
    assert results_from_json(results_to_json(results)) == results
    await store.aclose()


async def test_store_accepts_numpy_scalars(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    store = SearchStore(tmp_path / "np.sqlite")
    store.put_search_sync(
        "local", "q", 1, [Result("t", "https://a.example", "s", {"score": np.float64(1.5)})]
    )
    assert store.get_search_sync("local", "q", 1).value[0].extras == {"score": 1.5}
    with pytest.raises(ConfigError, match="cannot store a object in search results"):
        store.put_search_sync("local", "q", 2, [Result("t", "https://a.example", "s", {"bad": object()})])
    store.close()


async def test_concurrent_writes_all_land(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "c.sqlite")

    async def put(i: int) -> None:
        await store.put_search("b", f"q{i}", 10, [Result(f"t{i}", f"https://x.example/{i}", "s")])

    await asyncio.gather(*(put(i) for i in range(60)))
    assert store.counts_sync() == {"searches": 60, "documents": 0}
    assert (await store.get_search("b", "q42", 10)).value[0].title == "t42"
    assert store.purge_sync(max_age_s=3600) == 0
    assert await store.purge(max_age_s=-1) == 60
    store.close()
    store.close()  # twice is fine
    with pytest.raises(DataError, match="is closed"):
        store.get_search_sync("b", "q1", 10)


def test_corrupt_store_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not a database, just some bytes" * 200)
    with pytest.raises(
        DataError,
        match=r"search store .*broken\.sqlite is not a readable SQLite database .*"
        r"delete the file .* restore it from a copy",
    ):
        SearchStore(path)
    assert path.read_bytes().startswith(b"this is not a database")  # nothing was overwritten


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(DataError, match=r"SQLite database of another program \(tables: invoices\)"):
        SearchStore(path)


def test_schema_version_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    SearchStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE drgym_meta SET value = '0' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(DataError, match="has schema version 0, this drgym reads version 2 only"):
        SearchStore(path)


def test_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(DataError, match="cannot open search store|not a readable SQLite database"):
        SearchStore(tmp_path / "dir.sqlite")
