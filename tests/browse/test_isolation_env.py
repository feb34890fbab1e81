"""Slow-to-parse pages cannot stall other episodes: end to end through the env, on a loopback SearxNG server.

Two episodes each browse five pages that libxml2 needs many seconds to parse (one element with 40,000
attributes), while a third episode runs a ``web_search`` answered from the SQLite cache. Extraction runs in the
opener's :class:`~drgym.web.isolation.IsolatedPool`, so the cached search (SQLite on asyncio's default thread
pool) stays fast, the pages end with a clear time-budget error, and their workers are killed and replaced.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import gymnasium as gym
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import drgym  # noqa: F401  (registers the env ids)
from drgym.ratelimit import TokenBucket
from drgym.search.searxng import SearxngBackend
from drgym.services import ToolServices
from drgym.web.fetch import FetchConfig
from drgym.web.isolation import IsolatedPool
from drgym.web.opener import PageOpener
from tests.slow_pages import slow_to_parse

BUDGET_S = 1.5
QUIET = "<html><body><h1>Quiet</h1><p>A short page about lighthouses, keepers and their lamps.</p></body></html>"


def slow_page(seed: str) -> str:
    return slow_to_parse(seed)


def search_turn(query: str) -> str:
    call = {"name": "web_search", "arguments": {"query": [query]}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


def browse_turn(urls: list[str]) -> str:
    call = {"name": "browse_webpage", "arguments": {"url_list": urls}}
    return f"<think>read</think><tool_call>{json.dumps(call)}</tool_call>"


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """SearxNG's JSON API: ``slow X`` finds five slow pages ``/slow/X1..X5``, anything else the quiet page."""

    async def search(request: web.Request) -> web.Response:
        query = request.query["q"]
        base = str(request.url.origin())
        if query.startswith("slow "):
            tag = query.split()[1]
            urls = [f"{base}/slow/{tag}{i}" for i in range(1, 6)]
        else:
            urls = [f"{base}/quiet/{quote(query)}"]
        results = [{"title": url.rsplit("/", 1)[1], "url": url, "content": "a page", "engine": "test"}
                   for url in urls]
        return web.json_response({"query": query, "results": results})

    async def slow(request: web.Request) -> web.Response:
        return web.Response(text=slow_page(request.match_info["name"]), content_type="text/html")

    async def quiet(request: web.Request) -> web.Response:
        return web.Response(text=QUIET, content_type="text/html")

    app = web.Application()
    app.router.add_get("/search", search)
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/quiet/{name}", quiet)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.mark.slow
async def test_slow_pages_do_not_hold_up_a_cached_search_and_are_stopped(site, tmp_path):
    pool = IsolatedPool(workers=2)
    opener = PageOpener(config=FetchConfig(allow_hosts=frozenset({"127.0.0.1"}), per_host_rate=None), pool=pool)
    backend = SearxngBackend(base_url=site, language=None, page_opener=opener, limiter=TokenBucket(1000, 1000))

    shared = ToolServices()  # one cache for the three envs

    def make() -> gym.Env:
        return gym.make("drgym/WebResearch-v0", dataset="demo", search=backend, services=shared,
                        cache_path=str(tmp_path / "cache.sqlite"), browse_time_budget_s=BUDGET_S)

    readers = [make().unwrapped for _ in range(2)]
    bystander = make().unwrapped
    try:
        await bystander.areset(options={"index": 0})
        await bystander.astep(search_turn("lighthouse keepers"))  # live, and now in the cache
        await bystander.areset(options={"index": 1})
        urls = []
        for env, tag in zip(readers, "ab"):
            await env.areset(options={"index": 0})
            obs, *_ = await env.astep(search_turn(f"slow {tag}"))
            urls.append([f"{site}/slow/{tag}{i}" for i in range(1, 6)])
            assert urls[-1][0] in obs
        await pool.run(len, "warm")  # the workers are up before the clock starts
        started = time.monotonic()
        browsing = [asyncio.ensure_future(env.astep(browse_turn(u))) for env, u in zip(readers, urls)]
        await asyncio.sleep(1.0)  # the slow pages are being parsed now (fetched first: ~0.5 s here)
        searched = time.monotonic()
        obs, _, _, _, info = await bystander.astep(search_turn("lighthouse keepers"))
        search_s = time.monotonic() - searched
        outcomes = await asyncio.gather(*browsing)
        browse_s = time.monotonic() - started
    finally:
        for env in (*readers, bystander):
            env.close()
        await shared.aclose()
        await opener.aclose()
        pool.close()
    assert "/quiet/" in obs and info["search_usage"]["cache_hits"] >= 1, info["search_usage"]
    assert search_s < 2.0, f"a cached search took {search_s:.1f} s while slow pages were parsed"
    for obs, *_ in outcomes:
        assert obs.count(f"timed out after {BUDGET_S:g}s (the time budget per page); reading the page was "
                         "stopped") == 5
    # Five pages, four at a time, a budget per page: at most two budgets, plus scheduling slack.
    assert browse_s < 2 * BUDGET_S + 2.0
    assert pool.replaced >= 2  # every worker that was parsing a slow page was killed
