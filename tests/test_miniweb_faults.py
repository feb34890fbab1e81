"""The mini-web's Serper API and its injected latency and faults, against the site on loopback."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from drgym.data import load_corpus
from drgym.errors import ConfigError
from drgym.miniweb import FAULT_KINDS, FaultConfig, MiniWebBackend, article_path, create_app
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search.serper import SerperBackend


async def site(faults: FaultConfig | None = None) -> TestClient:
    client = TestClient(TestServer(create_app(load_corpus("demo"), corpus="demo", faults=faults)))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    c = await site()
    yield c
    await c.close()


# ----------------------------------------------------------------------------- the Serper API


async def test_serper_api_speaks_serpers_schema(client: TestClient) -> None:
    resp = await client.post(
        "/serper/search",
        json={"q": "tidal clock inventor", "num": 4, "gl": "us", "hl": "en"},
        headers={"X-API-KEY": "whatever"},
    )
    assert resp.status == 200 and resp.content_type == "application/json"
    payload = await resp.json()
    assert payload["searchParameters"] == {
        "q": "tidal clock inventor", "type": "search", "num": 4, "page": 1, "engine": "google", "gl": "us", "hl": "en"
    }
    organic = payload["organic"]
    assert 1 < len(organic) <= 4 and [o["position"] for o in organic] == list(range(1, len(organic) + 1))
    origin = str(client.make_url("/")).rstrip("/")
    for item in organic:
        assert set(item) == {"title", "link", "snippet", "position"}
        assert item["link"] == origin + article_path(item["title"]) and item["snippet"]
    assert "Tidal clock" in [o["title"] for o in organic]
    # the same ranking as the SearxNG API
    searx = await (await client.get("/search", params={"q": "tidal clock inventor", "format": "json"})).json()
    assert [o["link"] for o in organic] == [r["url"] for r in searx["results"][:4]]
    page2 = await (await client.post("/serper/search", json={"q": "the", "num": 3, "page": 2})).json()
    assert [o["position"] for o in page2["organic"]] == [4, 5, 6]


async def test_serper_api_rejects_bad_requests(client: TestClient) -> None:
    for body, message in (
        (b"not json", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'{"num": 3}', "`q` is required"),
        (b'{"q": "  "}', "`q` is required"),
        (b'{"q": "x", "num": 0}', "`num` must be 1 to 100"),
        (b'{"q": "x", "num": 101}', "`num` must be 1 to 100"),
        (b'{"q": "x", "page": "two"}', "`page`"),
    ):
        resp = await client.post("/serper/search", data=body, headers={"Content-Type": "application/json"})
        payload = await resp.json()
        assert resp.status == 400 and payload["statusCode"] == 400 and message in payload["message"], body
    assert (await client.get("/serper/search")).status == 404, "only POST, as Serper"


async def test_backend_through_the_serper_client() -> None:
    backend = MiniWebBackend(corpus="demo", search_api="serper")
    try:
        results = await backend.search("Who invented the tidal clock?", 5)
        assert results and all(r.extras["provider"] == "miniweb" for r in results)
        top = next(r for r in results if r.title == "Tidal clock")
        doc = await backend.open(top.url)
        assert doc.title == "Tidal clock" and "1824" in doc.content
    finally:
        await backend.aclose()
    with pytest.raises(ConfigError, match="search_api must be one of searxng, serper"):
        MiniWebBackend(corpus="demo", search_api="bing")
    with pytest.raises(ConfigError, match="faults must be a FaultConfig"):
        MiniWebBackend(corpus="demo", faults={"fault_rate": 1})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- faults and latency


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latency_ms": -1}, "latency_ms must be a number >= 0"),
        ({"fault_rate": 1.5}, "fault_rate must be a probability"),
        ({"fault_rate": float("nan")}, "fault_rate must be a probability"),
        ({"kinds": ("429", "teapot")}, "kinds must name some of 429, 503, reset, drip"),
        ({"kinds": ()}, "kinds must name some of"),
        ({"drip_interval_s": 0}, "drip_interval_s must be a positive number"),
        ({"drip_bytes": 0}, "drip_bytes must be a positive integer"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_fault_config_is_validated(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FaultConfig(**options)


def test_fault_config_defaults_inject_nothing() -> None:
    assert not FaultConfig().active and FaultConfig().kinds == FAULT_KINDS
    assert FaultConfig(latency_ms=1).active and FaultConfig(fault_rate=0.1).active
    assert FaultConfig(kinds="503").kinds == ("503",)


async def _outcome(client: TestClient, path: str) -> str:
    try:
        resp = await client.get(path)
        await resp.read()
        return str(resp.status)
    except aiohttp.ClientError:
        return "reset"


async def test_each_fault_kind(client: TestClient) -> None:
    await client.close()
    for kind in FAULT_KINDS:
        faulty = await site(FaultConfig(fault_rate=1.0, kinds=(kind,), retry_after_s=2.5, drip_interval_s=0.02,
                                        drip_bytes=256))
        try:
            path = article_path("Kellport")
            if kind == "429":
                resp = await faulty.get(path)
                assert resp.status == 429 and resp.headers["Retry-After"] == "2.5"
                assert "injected" in (await resp.json())["message"]
            elif kind == "503":
                assert (await faulty.get(path)).status == 503
            elif kind == "reset":
                with pytest.raises(aiohttp.ClientOSError, match="reset"):
                    await faulty.get(path)
            else:
                started = time.perf_counter()
                resp = await faulty.get(path, headers={"Accept-Encoding": "identity"})
                body = await resp.text()
                elapsed = time.perf_counter() - started
                assert resp.status == 200 and "<h1>Kellport</h1>" in body, "the real page, slowly"
                assert elapsed > 0.02 * (len(body.encode()) // 256 - 1) * 0.9
            robots = await faulty.get("/robots.txt")
            assert robots.status == 200, "robots.txt is never faulted"
        finally:
            await faulty.close()


async def test_faults_are_seeded_and_independent_of_arrival_order() -> None:
    paths = [article_path(t) for t in ("Kellport", "Tidal clock", "Ilse Varrow", "Veldan Coast")] * 10
    config = FaultConfig(fault_rate=0.5, kinds=("429", "503"), seed=11)

    async def outcomes(order: list[int], concurrent: bool) -> list[str]:
        faulty = await site(config)
        try:
            if concurrent:
                # each path's n-th request still gets the n-th draw for that path
                got = await asyncio.gather(*(_outcome(faulty, paths[i]) for i in order))
            else:
                got = [await _outcome(faulty, paths[i]) for i in order]
        finally:
            await faulty.close()
        by_index = dict(zip(order, got))
        return [by_index[i] for i in range(len(paths))]

    first = await outcomes(list(range(len(paths))), concurrent=False)
    again = await outcomes(list(range(len(paths))), concurrent=True)
    assert first == again
    counts = Counter(first)
    assert set(counts) == {"200", "429", "503"} and 10 <= counts["200"] <= 30, counts
    other_seed = FaultConfig(fault_rate=0.5, kinds=("429", "503"), seed=12)
    faulty = await site(other_seed)
    try:
        different = [await _outcome(faulty, p) for p in paths]
    finally:
        await faulty.close()
    assert different != first


async def test_retries_draw_anew() -> None:
    faulty = await site(FaultConfig(fault_rate=0.5, kinds=("503",), seed=3))
    try:
        got = [await _outcome(faulty, article_path("Kellport")) for _ in range(40)]
    finally:
        await faulty.close()
    assert "200" in got and "503" in got, "the same request does not always meet the same fate"


async def test_latency_and_jitter_delay_every_answer() -> None:
    faulty = await site(FaultConfig(latency_ms=150, jitter_ms=50, seed=0))
    try:
        started = time.perf_counter()
        statuses = await asyncio.gather(*(_outcome(faulty, article_path("Kellport")) for _ in range(20)))
        elapsed = time.perf_counter() - started
        t0 = time.perf_counter()
        await _outcome(faulty, "/robots.txt")
        robots_s = time.perf_counter() - t0
    finally:
        await faulty.close()
    assert statuses == ["200"] * 20
    assert 0.15 <= elapsed < 1.0, "20 answers waited together, not one after another"
    assert robots_s < 0.15


async def test_serper_search_requests_are_faulted_and_the_client_retries() -> None:
    faulty = await site(FaultConfig(fault_rate=0.5, kinds=("429", "503", "reset"), retry_after_s=0.01, seed=5))
    retry = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, rng=random.Random(0))
    serper = SerperBackend(base_url=str(faulty.make_url("/serper")), api_key="k", retry=retry,
                           limiter=TokenBucket(1000.0, burst=100))
    try:
        results = await asyncio.gather(*(serper.search(f"tidal clock {i}", 3) for i in range(10)),
                                       return_exceptions=True)
    finally:
        await serper.aclose()
        await faulty.close()
    assert sum(isinstance(r, list) and len(r) > 0 for r in results) >= 8, results
