"""The store's modes end to end: normalised keys, TTL, the size cap, record/replay keyed to episodes, export/import.

Live answers come from the loopback provider server, whose answers *drift*: every search and every page read
carries a new edition number, as the live web changes between two runs. So a test can tell an answer served
from the store (old edition) from one fetched live (new edition).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from aiohttp import web

import drgym  # noqa: F401  (registers the env ids)
from drgym.document import Document
from drgym.errors import ConfigError, DataError, FetchError, ReplayMissError
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search.base import Result
from drgym.search.brave import BraveBackend
from drgym.search.cache import SearchStore, normalize_query, normalize_url, options_key
from drgym.search.episode import Episode, EpisodeView
from drgym.search.failover import FailoverBackend
from drgym.search.metering import Meter, MeteredBackend
from drgym.search.replay import (
    DEFAULT_CACHE_TTL_S,
    RecordingBackend,
    ReplayBackend,
    backend_options,
)
from drgym.search.serper import SerperBackend
from drgym.search.stack import CACHE_MODES, SearchConfig, resolve_cache_mode
from drgym.services import ToolServices
from drgym.web.opener import PageOpener
from tests.search import providers_server
from tests.search.providers_server import KEYS, ProviderServer

RETRY = RetryPolicy(max_attempts=2, base_delay=0.005, max_delay=0.05, max_total_s=2.0, rng=random.Random(3))


class DriftServer(ProviderServer):
    """The provider server; hits link to its own pages, and every answer carries a new edition number."""

    def __init__(self) -> None:
        super().__init__()
        self.editions = itertools.count(1)
        self.page_requests: list[str] = []

    async def _page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.page_requests.append(name)
        if name.startswith("missing"):
            return web.Response(status=404, text="not found")
        edition = next(self.editions)
        body = (
            f"<html><head><title>{name}</title></head><body><main><article><h1>Page {name}</h1>"
            f"<p>The Kellport lighthouse keeper wrote edition {edition} of the logbook for {name}.</p>"
            "</article></main></body></html>"
        )
        return web.Response(text=body, content_type="text/html")


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DriftServer]:
    async with DriftServer() as srv:

        def hits(query: str, n: int) -> list[dict[str, str]]:
            edition = next(srv.editions)
            slug = providers_server._slug(query)
            return [
                {
                    "title": f"{query} result {i} (edition {edition})",
                    "url": srv.page_url(f"{slug}-{i}"),
                    "snippet": f"Edition {edition} about {query}, hit {i}.",
                }
                for i in range(1, n + 1)
            ]

        monkeypatch.setattr(providers_server, "_hits", hits)
        yield srv



@pytest.fixture
def serper(server: DriftServer, opener: PageOpener) -> Callable[..., SerperBackend]:
    def make(**kwargs: Any) -> SerperBackend:
        return SerperBackend(
            api_key=KEYS["serper"],
            base_url=server.base_url("serper"),
            retry=RETRY,
            limiter=TokenBucket(1000, 100),
            page_opener=opener,
            **kwargs,
        )

    return make


def titles(results: list[Result]) -> list[str]:
    return [r.title for r in results]


# ----------------------------------------------------------------------------- normalised keys


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("  Who  invented\tthe\n computer? ", "Who invented the computer?"),
        ("CASE Kept", "CASE Kept"),
        ("caf\u00e9\u3000\u65e5\u672c", "caf\u00e9 \u65e5\u672c"),  # an ideographic space is whitespace too
        ("lone \ud800 surrogate", "lone \ud800 surrogate"),
    ],
)
def test_query_normalisation(query: str, key: str) -> None:
    assert normalize_query(query) == key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("HTTPS://Example.COM:443/Path/A?q=B#frag", "https://example.com/Path/A?q=B"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("  http://User:Pw@EXAMPLE.com/x  ", "http://User:Pw@example.com/x"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("http://example.com:99999/x", "http://example.com:99999/x"),  # a bad port: kept as written
        ("http://[::1/x", "http://[::1/x"),
        ("https://local.drgym/demo/p-1", "https://local.drgym/demo/p-1"),
        ("ftp://Example.com/A#b", "ftp://Example.com/A#b"),  # only http(s) is normalised
        ("not a url \x00", "not a url \x00"),
    ],
)
def test_url_normalisation(url: str, key: str) -> None:
    assert normalize_url(url) == key


def test_equivalent_requests_share_an_entry(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "s.sqlite")
    store.put_search_sync("b", "  kellport   lighthouse ", 10, [Result("t", "https://a.example/", "s")])
    assert store.get_search_sync("b", "kellport lighthouse", 10) is not None
    assert store.get_search_sync("b", "Kellport lighthouse", 10) is None  # case is part of the key
    assert store.get_search_sync("b", "kellport lighthouse", 5) is None  # so is k
    assert store.get_search_sync("b", "kellport lighthouse", 10, options={"gl": "de"}) is None
    assert store.get_search_sync("other", "kellport lighthouse", 10) is None
    store.put_document_sync("b", "HTTP://Docs.Example:80/A#top", Document("u", "t", "c"))
    assert store.get_document_sync("b", "http://docs.example/A").value.content == "c"
    assert store.get_document_sync("b", "http://docs.example/a") is None  # the path keeps its case
    assert (
        options_key({"hl": "en", "gl": "us"})
        == options_key({"gl": "us", "hl": "en"})
        == '{"gl":"us","hl":"en"}'
    )
    store.close()


async def test_provider_options_are_part_of_the_key(
    tmp_path: Path, server: DriftServer, serper: Callable[..., SerperBackend]
) -> None:
    us, de = serper(gl="us"), serper(gl="de")
    assert backend_options(us) == {"gl": "us", "hl": "en"}  # not base_url, timeouts or the key
    metered = MeteredBackend(de, Meter())
    assert backend_options(metered) == {"gl": "de", "hl": "en"}  # wrappers are looked through
    store = SearchStore(tmp_path / "cache.sqlite")
    cache_us = ReplayBackend(store, strict=False, inner=us)
    cache_de = ReplayBackend(store, strict=False, inner=metered)
    first = await cache_us.search("lighthouse", 3)
    assert titles(await cache_us.search("lighthouse", 3)) == titles(first)
    german = await cache_de.search("lighthouse", 3)
    assert titles(german) != titles(first), "another gl is another request, not a cache hit"
    assert [r.body["gl"] for r in server.seen("serper")] == ["us", "de"]
    assert store.search_options_sync("serper") == ['{"gl":"de","hl":"en"}', '{"gl":"us","hl":"en"}']
    with pytest.raises(ConfigError, match="several provider option sets .* pass options="):
        ReplayBackend(store)
    replay = ReplayBackend(store, options={"gl": "de", "hl": "en"})
    assert titles(await replay.search("lighthouse", 3)) == titles(german)
    await us.aclose()
    await de.aclose()
    store.close()


async def test_failover_options_are_per_member(server: DriftServer) -> None:
    brave = BraveBackend(api_key=KEYS["brave"], base_url=server.base_url("brave"), country="de")
    serper = SerperBackend(api_key=KEYS["serper"], base_url=server.base_url("serper"), hl="fr")
    chain = FailoverBackend([MeteredBackend(serper, Meter()), MeteredBackend(brave, Meter())])
    assert backend_options(chain) == {
        "serper": {"gl": "us", "hl": "fr"},
        "brave": {"country": "de", "search_lang": None},
    }
    await chain.aclose()


# ----------------------------------------------------------------------------- TTL and the size cap


def test_ttl_expires_cache_entries_but_never_recorded_ones(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "ttl.sqlite")
    store.put_search_sync("b", "cached", 1, [])
    store.put_search_sync("b", "recorded", 1, [], record=True, episode="e")
    with sqlite3.connect(store.path) as conn:  # both written a day ago
        conn.execute("UPDATE entries SET created = created - 86400")
    conn.close()
    assert store.get_search_sync("b", "cached", 1, max_age_s=3600) is None
    assert store.get_search_sync("b", "cached", 1, max_age_s=2 * 86400) is not None
    entry = store.get_search_sync("b", "recorded", 1, max_age_s=3600)
    assert entry is not None and entry.pinned
    assert SearchConfig(search="serper").cache_ttl_s == DEFAULT_CACHE_TTL_S == 7 * 24 * 3600
    store.close()


def test_size_cap_evicts_least_recently_used_and_never_recorded(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "lru.sqlite", max_entries=3)
    for i in range(3):
        store.put_search_sync("b", f"q{i}", 1, [Result(f"t{i}", "https://a.example/", "s")], evict=True)
    assert store.get_search_sync("b", "q0", 1, touch=True) is not None  # q0 is now the most recently used
    store.put_search_sync("b", "q3", 1, [], evict=True)
    assert store.get_search_sync("b", "q1", 1) is None, "q1 was the least recently used"
    assert all(store.get_search_sync("b", f"q{i}", 1) is not None for i in (0, 2, 3))
    for i in range(5):  # recordings are complete: pinned entries are never evicted, even past the cap
        store.put_search_sync("b", f"rec{i}", 1, [], record=True, episode="e")  # record mode never evicts
    assert store.counts_sync()["searches"] == 5 + 3
    store.put_search_sync("b", "q4", 1, [], evict=True)  # the cap counts every entry: the cache part is gone
    assert store.counts_sync()["searches"] == 5
    assert all(store.get_search_sync("b", f"rec{i}", 1) is not None for i in range(5))
    store.close()

    big = "x" * 10_000
    store = SearchStore(tmp_path / "bytes.sqlite", max_bytes=35_000)
    for i in range(6):
        store.put_document_sync("b", f"https://a.example/{i}", Document("u", "t", big), evict=True)
        stats = store.stats_sync()
        assert stats["bytes"] <= 35_000
    assert store.counts_sync()["documents"] == 3
    assert [store.get_document_sync("b", f"https://a.example/{i}") is not None for i in range(6)] == [
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    with sqlite3.connect(store.path) as conn:  # the running totals match the table
        assert conn.execute("SELECT COUNT(*), SUM(size) FROM entries").fetchone() == (
            stats["entries"],
            stats["bytes"],
        )
    conn.close()
    store.close()


def test_bad_caps_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes must be a positive integer or None, got 0"):
        SearchStore(tmp_path / "a.sqlite", max_bytes=0)
    with pytest.raises(ConfigError, match="cache_max_entries"):
        SearchConfig(search="serper", cache_path=str(tmp_path / "a.sqlite"), cache_max_entries=-1)
    with pytest.raises(ConfigError, match="cache_ttl_s"):
        SearchConfig(search="serper", cache_path=str(tmp_path / "a.sqlite"), cache_ttl_s=0)


async def test_read_write_cache_refreshes_stale_entries_and_never_overwrites_recordings(
    tmp_path: Path, server: DriftServer, serper: Callable[..., SerperBackend]
) -> None:
    live = serper()
    store = SearchStore(tmp_path / "rw.sqlite")
    recorder = RecordingBackend(live, store)
    recorded = await recorder.search("recorded query", 2, episode=Episode("ep-1"))
    cache = ReplayBackend(store, strict=False, inner=live, ttl_s=0.05)
    fresh = await cache.search("cached query", 2)
    assert titles(await cache.search("cached query", 2)) == titles(fresh)
    await asyncio.sleep(0.08)
    refreshed = await cache.search("cached query", 2)
    assert titles(refreshed) != titles(fresh), "a stale entry is asked again"
    assert titles(await cache.search("recorded query", 2)) == titles(recorded), "recordings never go stale"
    assert len(server.seen("serper")) == 3
    stats = store.stats_sync()
    assert stats["hits"] == 2 and stats["misses"] == 3 and stats["pinned"] == 1
    await live.aclose()
    store.close()


# ----------------------------------------------------------------------------- record mode and episodes


async def test_concurrent_episodes_keep_their_own_keys_and_see_one_answer(
    tmp_path: Path, server: DriftServer, serper: Callable[..., SerperBackend]
) -> None:
    live = serper()
    recorder = RecordingBackend(live, tmp_path / "rec.sqlite")

    async def episode(name: str, own: str) -> tuple[list[Result], list[Result], Document]:
        view = EpisodeView(recorder, Episode(name))  # the identity goes with every call of the view
        await asyncio.sleep(0)  # let the other episode start: both run interleaved on this loop
        shared, mine = await asyncio.gather(view.search("shared query", 3), view.search(own, 3))
        return shared, mine, await view.open(mine[0].url)

    (shared_a, own_a, page_a), (shared_b, own_b, page_b) = await asyncio.gather(
        episode("alpha", "alpha only"), episode("beta", "beta only")
    )
    assert titles(shared_a) == titles(shared_b), "both episodes see the first answer stored"
    assert "edition" in page_a.content and page_a != page_b
    store = recorder.store
    assert store.episodes_sync() == ["alpha", "beta"]
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute(
            "SELECT l.episode, e.kind, e.key FROM episode_entries l JOIN entries e ON e.id = l.entry "
            "ORDER BY 1, 2, 3"
        ).fetchall()
    conn.close()
    keys = {(ep, kind, bytes(key).decode()) for ep, kind, key in rows}
    assert keys == {
        ("alpha", "search", "shared query"),
        ("alpha", "search", "alpha only"),
        ("alpha", "document", own_a[0].url),
        ("beta", "search", "shared query"),
        ("beta", "search", "beta only"),
        ("beta", "document", own_b[0].url),
    }

    # A third episode asking the same again is served from the recording: no live call, the same answer.
    before = len(server.requests) + len(server.page_requests)
    gamma = Episode("gamma")
    again = await recorder.search("shared query", 3, episode=gamma)
    assert await recorder.open(own_a[0].url, episode=gamma) == page_a
    assert titles(again) == titles(shared_a)
    assert len(server.requests) + len(server.page_requests) == before
    assert store.episodes_sync() == ["alpha", "beta", "gamma"]
    await recorder.aclose()


async def test_record_then_strict_replay_serves_only_the_file(
    tmp_path: Path, server: DriftServer, serper: Callable[..., SerperBackend]
) -> None:
    path = tmp_path / "run.sqlite"
    recorder = RecordingBackend(serper(), path)
    view = EpisodeView(recorder, Episode("ep"))
    results = await view.search("kellport", 4)
    page = await view.open(results[0].url)
    with pytest.raises(FetchError, match="404"):
        await view.open(server.page_url("missing-1"))
    await recorder.aclose()
    requests = len(server.requests) + len(server.page_requests)

    replay = ReplayBackend(path)
    assert titles(await replay.search("  kellport ", 4)) == titles(results)
    assert await replay.open(results[0].url) == page
    with pytest.raises(FetchError, match="404"):
        await replay.open(server.page_url("missing-1"))
    with pytest.raises(ReplayMissError, match="replay miss: no recorded search for 'lighthouse'"):
        await replay.search("lighthouse", 4)
    with pytest.raises(ReplayMissError, match="no recorded page"):
        await replay.open(results[1].url)
    assert len(server.requests) + len(server.page_requests) == requests, "replay made no live call"
    mtime = path.stat().st_mtime_ns
    await replay.aclose()
    assert path.stat().st_mtime_ns == mtime, "replay never writes to the recording"


# ----------------------------------------------------------------------------- the env's cache_mode option


def test_cache_mode_resolution_and_aliases(tmp_path: Path) -> None:
    p, q = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    assert CACHE_MODES == ("off", "read-write", "record", "replay")
    assert resolve_cache_mode(None) == ("off", None, None)
    assert resolve_cache_mode(None, cache_path=p) == ("read-write", p, None)
    assert (
        resolve_cache_mode(None, record_path=p)
        == resolve_cache_mode("record", cache_path=p)
        == ("record", p, None)
    )
    assert (
        resolve_cache_mode(None, replay_path=p)
        == resolve_cache_mode("replay", cache_path=p)
        == ("replay", p, None)
    )
    assert resolve_cache_mode("record", record_path=p) == ("record", p, None)
    assert resolve_cache_mode(None, cache_path=q, record_path=p) == ("record", p, q)  # record over a cache
    with pytest.raises(ConfigError, match="must be one of 'off', 'read-write', 'record', 'replay', got 'rw'"):
        resolve_cache_mode("rw", cache_path=p)
    with pytest.raises(ConfigError, match="cache_mode='replay' needs `cache_path`"):
        resolve_cache_mode("replay")
    with pytest.raises(ConfigError, match="`record_path` means cache_mode='record'"):
        resolve_cache_mode("replay", cache_path=p, record_path=p)
    with pytest.raises(ConfigError, match="name different files"):
        resolve_cache_mode("record", cache_path=p, record_path=q)
    with pytest.raises(ConfigError, match="cache_mode='off' but `cache_path` is set"):
        resolve_cache_mode("off", cache_path=p)
    with pytest.raises(ConfigError, match="exclude each other"):
        resolve_cache_mode(None, record_path=p, replay_path=q)
    with pytest.raises(ConfigError, match="must be one of 'off', 'read-write', 'record', 'replay'"):
        gym.make("drgym/WebResearch-v0", dataset="demo", cache_mode="cache", cache_path=p)


def test_record_mode_on_the_local_backend_via_the_alias(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite"
    env = gym.make("drgym/WebResearch-v0", dataset="demo", record_path=str(path))
    _, info = env.reset(options={"index": 0})
    env.step(
        '<think>s</think><tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock"]}}'
        "</tool_call>"
    )
    env.close()
    store = SearchStore(path, create=False)
    assert store.episodes_sync() == [info["record_id"]] and store.counts_sync()["searches"] == 1
    store.close()


def search_turn(*queries: str) -> str:
    return f"<think>s</think><tool_call>{json.dumps({'name': 'web_search', 'arguments': {'query': list(queries)}})}</tool_call>"


def browse_turn(*urls: str) -> str:
    return f"<think>r</think><tool_call>{json.dumps({'name': 'browse_webpage', 'arguments': {'url_list': list(urls)}})}</tool_call>"


DATASET = [
    {"question": "Who kept the Kellport lighthouse?", "answers": ["Marta Quell"], "id": "q-alpha"},
    {"question": "Who built the tidal clock?", "answers": ["Ilse Varrow"], "id": "q-beta"},
]


async def test_env_record_export_import_replay_is_byte_identical(
    tmp_path: Path, server: DriftServer, opener: PageOpener
) -> None:
    kwargs = {
        "base_url": server.base_url("serper"),
        "api_key": KEYS["serper"],
        "retry": RETRY,
        "limiter": TokenBucket(1000, 100),
        "page_opener": opener,
    }
    path = tmp_path / "record.sqlite"
    shared = ToolServices()
    options = {"dataset": DATASET, "search": "serper", "search_kwargs": kwargs, "services": shared}
    alpha = gym.make("drgym/WebResearch-v0", **options, cache_mode="record", cache_path=str(path)).unwrapped
    beta = gym.make("drgym/WebResearch-v0", **options, record_path=str(path)).unwrapped
    assert alpha.backend is beta.backend, "the alias builds the same shared stack"

    async def play(env: Any, index: int, own: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        await env.areset(options={"index": index})
        actions = [search_turn(own, "shared lighthouse query")]
        steps = [await env.astep(actions[0])]
        url = next(iter(env._episode.seen_urls))
        actions += [browse_turn(url), "<think>d</think><answer>Marta Quell</answer>"]
        steps += [await env.astep(a) for a in actions[1:]]
        return actions, steps

    (actions_a, steps_a), (_, steps_b) = await asyncio.gather(
        play(alpha, 0, "alpha lighthouse keeper"), play(beta, 1, "beta tidal clock")
    )
    shared_a = steps_a[0][0].split("shared lighthouse query result 1")[1][:14]
    assert shared_a == steps_b[0][0].split("shared lighthouse query result 1")[1][:14]  # one edition for both
    assert "edition" in steps_a[1][0] and steps_a[-1][1] == 1.0
    alpha.close()
    beta.close()
    assert not shared.closed, "envs never close the services they were given"
    await shared.aclose()  # flushes and closes the recording

    # Only alpha's episode goes into the portable file; it is imported into a fresh store.
    store = SearchStore(path, create=False)
    assert store.episodes_sync() == ["q-alpha", "q-beta"]
    exported = store.export_sync(tmp_path / "alpha.jsonl.gz", episode="q-alpha")
    store.close()
    assert exported == 3  # two searches and one page
    fresh = SearchStore(tmp_path / "imported.sqlite")
    assert fresh.import_sync(tmp_path / "alpha.jsonl.gz")["added"] == 3
    fresh.close()
    await server.__aexit__(None, None, None)  # no live service from here on
    requests = len(server.requests)

    replayer = gym.make(
        "drgym/WebResearch-v0",
        dataset=DATASET,
        search="serper",
        cache_mode="replay",
        cache_path=str(tmp_path / "imported.sqlite"),
    ).unwrapped
    await replayer.areset(options={"index": 0})
    replayed = [await replayer.astep(a) for a in actions_a]
    assert [s[0] for s in replayed] == [s[0] for s in steps_a]  # byte-identical observations
    assert [s[1:4] for s in replayed] == [s[1:4] for s in steps_a]
    assert replayed[-1][4]["messages"] == steps_a[-1][4]["messages"]
    await replayer.areset(options={"index": 1})
    obs, _, term, _, info = await replayer.astep(search_turn("beta tidal clock"))
    assert not term and "replay miss" in obs and info["backend_errors"] == 1, (
        "beta's entries were not exported"
    )
    assert len(server.requests) == requests
    await replayer.aclose()


# ----------------------------------------------------------------------------- export and import


def _filled_store(path: Path) -> SearchStore:
    store = SearchStore(path)
    weird = "lone \ud800, NUL \x00, emoji \U0001f600"
    store.put_search_sync(
        "serper",
        weird,
        3,
        [Result(weird, "https://a.example/" + weird, weird, {"s": 0.5})],
        options={"gl": "us"},
        record=True,
        episode="e1",
    )
    store.put_search_sync(
        "serper", "plain", 3, [Result("t", "https://a.example/", "s")], record=True, episode="e2"
    )
    store.put_document_sync(
        "serper",
        "https://a.example/doc",
        Document("https://a.example/doc", "T", weird * 50),
        record=True,
        episode="e1",
    )
    store.put_document_sync(
        "serper", "https://a.example/gone", error=FetchError("HTTP 404 for it"), record=True, episode="e2"
    )
    store.put_search_sync("brave", "cached", 5, [Result("c", "https://c.example/", "s")])
    return store


def test_export_import_round_trip_is_exact(tmp_path: Path) -> None:
    store = _filled_store(tmp_path / "src.sqlite")
    assert store.export_sync(tmp_path / "all.jsonl.gz") == 5
    copy = SearchStore(tmp_path / "copy.sqlite")
    done = copy.import_sync(tmp_path / "all.jsonl.gz")
    assert done == {
        "entries": 5,
        "added": 5,
        "updated": 0,
        "kept": 0,
        "conflicts": 0,
        "episodes": 2,
        "evicted": 0,
    }
    assert copy.episodes_sync() == ["e1", "e2"]
    copy.export_sync(tmp_path / "again.jsonl.gz")
    first, second = _lines(tmp_path / "all.jsonl.gz")[1:], _lines(tmp_path / "again.jsonl.gz")[1:]
    assert first == second, "entries, keys, payloads and links survive byte for byte"
    weird = "lone \ud800, NUL \x00, emoji \U0001f600"
    assert copy.get_search_sync("serper", weird, 3, options={"gl": "us"}).value[0].extras == {"s": 0.5}
    # Importing again merges: nothing new, nothing duplicated.
    assert (
        copy.import_sync(tmp_path / "all.jsonl.gz")["kept"] == 5 and copy.counts_sync() == store.counts_sync()
    )
    # An entry recorded differently here is kept and reported as a conflict.
    other = SearchStore(tmp_path / "other.sqlite")
    other.put_search_sync("serper", "plain", 3, [Result("different", "https://b.example/", "s")], record=True)
    done = other.import_sync(tmp_path / "all.jsonl.gz")
    assert done["conflicts"] == 1 and done["added"] == 4
    assert other.get_search_sync("serper", "plain", 3).value[0].title == "different"
    for s in (store, copy, other):
        s.close()


async def test_export_one_episode(tmp_path: Path) -> None:
    store = _filled_store(tmp_path / "src.sqlite")
    assert store.export_sync(tmp_path / "e2.jsonl.gz", episode="e2") == 2
    with pytest.raises(
        DataError,
        match=r"no episode 'e3' recorded in .*src\.sqlite; recorded episodes include: "
        r"'e1', 'e2'",
    ):
        store.export_sync(tmp_path / "e3.jsonl.gz", episode="e3")
    assert not (tmp_path / "e3.jsonl.gz").exists()
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    copy = SearchStore(tmp_path / "e2.sqlite")
    copy.import_sync(tmp_path / "e2.jsonl.gz")
    replay = ReplayBackend(copy)
    with pytest.raises(FetchError, match="HTTP 404 for it"):
        await replay.open("https://a.example/gone")
    assert copy.episodes_sync() == ["e2"] and copy.counts_sync() == {"searches": 1, "documents": 1}
    store.close()
    copy.close()


def _lines(path: Path) -> list[bytes]:
    with gzip.open(path) as f:
        return f.read().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        f.writelines(lines)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p, ls: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable gzip file"),
        (lambda p, ls: p.write_bytes(b"plain text, not gzip\n"), "not a readable gzip file"),
        (lambda p, ls: _write(p, ls[:-1]), "truncated: no end line after 5 entries"),
        (lambda p, ls: _write(p, ls[:3] + ls[-1:]), "the file holds 2 entries, its header says 5"),
        (lambda p, ls: _write(p, ls[:2] + [b'{"kind": "search"\n'] + ls[2:]), "line 3 is not JSON"),
        (
            lambda p, ls: _write(p, ls[:2] + [ls[2].replace(b'"kind":"search"', b'"kind":"video"')] + ls[3:]),
            "line 3: missing or invalid 'kind'",
        ),
        (
            lambda p, ls: _write(p, [ls[0].replace(b'"version":1', b'"version":99')] + ls[1:]),
            "export format version 99; this drgym reads versions 1 to 1",
        ),
        (
            lambda p, ls: _write(p, [b'{"format": "something else"}\n'] + ls[1:]),
            "not a drgym search-store export",
        ),
        (lambda p, ls: _write(p, [*ls, b'{"kind": "search"}\n']), "data after the end line"),
    ],
    ids=["cut", "not-gzip", "no-end", "count", "bad-json", "bad-field", "version", "foreign", "trailing"],
)
def test_bad_export_files_import_nothing(tmp_path: Path, damage: Callable[..., Any], message: str) -> None:
    source = _filled_store(tmp_path / "src.sqlite")
    export = tmp_path / "x.jsonl.gz"
    source.export_sync(export)
    source.close()
    damage(export, _lines(export))
    target = SearchStore(tmp_path / "target.sqlite")
    target.put_search_sync("mine", "kept", 1, [Result("t", "https://k.example/", "s")])
    with pytest.raises(DataError, match=rf"cannot import .*x\.jsonl\.gz: {message}.*; nothing was imported"):
        target.import_sync(export)
    assert target.counts_sync() == {"searches": 1, "documents": 0} and target.episodes_sync() == []
    assert target.stats_sync()["bytes"] > 0 and target.get_search_sync("mine", "kept", 1) is not None
    target.close()


# ----------------------------------------------------------------------------- schema version


def test_a_file_of_another_schema_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE drgym_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO drgym_meta VALUES ('schema', '1');"
            "CREATE TABLE searches (backend TEXT NOT NULL, query BLOB NOT NULL, k INTEGER NOT NULL,"
            " payload TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (backend, query, k));"
        )
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"v1\.sqlite has schema version 1, this drgym reads version 2 only"):
        SearchStore(path)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"drgym_meta", "searches"} and path.read_bytes()[100:] == before[100:]
