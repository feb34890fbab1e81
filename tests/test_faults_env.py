"""Bad input and faults, end to end through the env: each step gives a clear error observation in time.

A hostile loopback server speaks Serper's API (its results link to its own pages) and serves every kind of bad
page a live web serves: timeouts, slow drips, resets, 429s, 5xx, redirect loops, redirects to private
addresses, a 200 MB body, a gzip bomb, wrong or missing charsets, invalid and deeply nested HTML, binary
served as HTML, empty pages, non-HTML types; and malformed provider JSON. The env runs the live path on it
(Serper client → SSRF-guarded fetcher, allow-listed to loopback only → extraction → reader). Every step
must return, never raise, within the configured time budget, say what went wrong, and leave memory flat.
The mini-web's own injected faults (429, 503, resets, slow drip) are driven through the synchronous API.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import random
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import gymnasium as gym
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import drgym  # noqa: F401  (registers the env ids)
from drgym.miniweb import FaultConfig, MiniWebBackend
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.web.fetch import FetchConfig
from drgym.web.opener import PageOpener

QUESTION = "Who designed the Kellport lighthouse?"
ANSWER = "Marta Quell"
FACT = "The Kellport lighthouse was designed by Marta Quell and first lit in 1871."
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16
HUGE_BYTES = 200 * 1024 * 1024
BOMB_MEMBERS = 256  # gzip members of 1 MiB each: 256 MiB inflated from about 256 KiB on the wire
DEPTH = 50_000

# The time limits under test, and the most a step may take (the budget plus scheduling slack).
BROWSE_BUDGET_S = 3.0
FETCH = FetchConfig(
    allow_hosts=frozenset({"127.0.0.1"}),
    per_host_rate=None,
    connect_timeout=0.5,
    read_timeout=0.5,
    total_timeout=1.5,
    max_bytes=1_000_000,
    max_decompressed_bytes=2_000_000,
    max_retries=1,
    retry_backoff=0.01,
    max_retry_after=0.2,
)
SEARCH_TIMEOUT_S = 0.5
SEARCH_RETRY_TOTAL_S = 1.0
STEP_LIMIT_S = BROWSE_BUDGET_S + 1.0


def article(body: str, *, title: str = "Lighthouses", head: str = "") -> str:
    return (
        f"<!DOCTYPE html><html><head>{head}<title>{title}</title></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About us</a></nav>"
        f"<main><article><h1>{title}</h1><p>{body}</p></article></main>"
        "<footer>All rights reserved.</footer></body></html>"
    )


def _gzip_bomb() -> bytes:
    paragraph = b"<p>" + b"bomb " * 800 + b"</p>\n"
    member = gzip.compress(b"<html><body>" + paragraph * (1024 * 1024 // len(paragraph)), 9)
    return member * BOMB_MEMBERS


class HostileWeb:
    """Serper's ``POST /serper/search`` and ``GET /page/<kind>`` pages that misbehave as ``kind`` says.

    A search for ``page:<kind>`` returns one result linking to ``/page/<kind>``; a search for ``api:<kind>``
    makes the search API itself misbehave.
    """

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}  # body bytes written per page kind
        self.hits: dict[str, int] = {}
        self._bomb = _gzip_bomb()
        app = web.Application()
        app.router.add_post("/serper/search", self._search)
        app.router.add_get("/page/{kind}", self._page)
        self.server = TestServer(app, host="127.0.0.1")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    # ---------------------------------------------------------------- search API

    async def _search(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        q: str = body["q"]
        kind, _, arg = q.partition(":")
        if kind == "page":
            organic = [{"title": f"About {arg}", "link": self.url(f"/page/{arg}"), "snippet": f"page {arg}",
                        "position": 1}]
            return web.json_response({"searchParameters": {"q": q}, "organic": organic})
        if kind != "api":
            return web.json_response({"message": "unknown test query"}, status=400)
        self.hits[q] = self.hits.get(q, 0) + 1
        return await self._misbehave(request, arg, json_api=True)

    # ---------------------------------------------------------------- pages

    async def _page(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.hits[kind] = self.hits.get(kind, 0) + 1
        pages: dict[str, tuple[bytes, str]] = {
            "ok": (article(FACT).encode(), "text/html; charset=utf-8"),
            "charset-wrong": (article(f"Café Zürich. {FACT}").encode("cp1252"), "text/html; charset=utf-8"),
            "charset-missing": (article(f"Café Zürich. {FACT}").encode(), "text/html"),
            "charset-bogus": (article(f"Café Zürich. {FACT}").encode(), "text/html; charset=x-no-such-charset"),
            "charset-mislabelled": (article(f"Café Zürich. {FACT}").encode(), "text/html; charset=iso-8859-1"),
            "utf16": (article(FACT).encode("utf-16"), "text/html"),
            "invalid-html": (
                b"<html><body><p>Broken <b>bold <i>" + FACT.encode() + b"</p></b></i><div><<<>>></div>"
                b"</tr></td>&bogus; <p unclosed='x <table><tr><td>cell</div></span></html></html>garbage",
                "text/html",
            ),
            "deep-html": (
                (b"<html><body>" + b"<div>" * DEPTH + FACT.encode() + b"</div>" * DEPTH + b"</body></html>"),
                "text/html",
            ),
            "binary-as-html": (PNG, "text/html; charset=utf-8"),
            "noise-as-html": (random.Random(0).randbytes(200_000), "text/html"),
            "binary-untyped": (PNG, ""),
            "empty": (b"", "text/html"),
            "blank": (b"<html><head><title></title></head><body>   </body></html>", "text/html"),
            "image": (PNG, "image/png"),
            "zip": (b"PK\x03\x04" + bytes(1000), "application/zip"),
            "video": (bytes(1000), "video/mp4"),
            "octet": (bytes(1000), "application/octet-stream"),
        }
        if kind in pages:
            data, content_type = pages[kind]
            resp = web.Response(body=data)
            if content_type:
                resp.headers["Content-Type"] = content_type
            else:
                resp.headers.pop("Content-Type", None)
            self.sent[kind] = len(data)
            return resp
        return await self._misbehave(request, kind, json_api=False)

    async def _misbehave(self, request: web.Request, kind: str, *, json_api: bool) -> web.StreamResponse:
        if kind == "timeout":
            await asyncio.sleep(30)  # far past every client limit; cancelled when the client leaves
            return web.Response(text="too late")
        if kind == "drip":
            return await self._drip(request, json_api)
        if kind == "reset":
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if kind in ("429", "429-long", "429-bare"):
            headers = {"429": {"Retry-After": "0.05"}, "429-long": {"Retry-After": "3600"}}.get(kind, {})
            return web.json_response({"message": "Too many requests"}, status=429, headers=headers)
        if kind in ("500", "503"):
            return web.json_response({"message": "server error"}, status=int(kind))
        if kind == "loop-a":
            raise web.HTTPFound("/page/loop-b")
        if kind == "loop-b":
            raise web.HTTPFound("/page/loop-a")
        if kind == "to-private":
            raise web.HTTPFound("http://10.0.0.1/admin")
        if kind == "to-metadata":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        if kind == "to-file":
            raise web.HTTPFound("file:///etc/passwd")
        if kind in ("huge", "huge-chunked"):
            return await self._huge(request, json_api, declared=kind == "huge")
        if kind == "gzip-bomb":
            self.sent[kind] = len(self._bomb)
            return web.Response(body=self._bomb, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})
        if json_api:
            bodies = {
                "truncated": (b'{"organic": [{"tit', "application/json"),
                "not-object": (b"[1, 2, 3]", "application/json"),
                "organic-not-list": (b'{"organic": {"title": "x", "link": "http://a.b/"}}', "application/json"),
                "html": (b"<html><body>Gateway says hello</body></html>", "text/html"),
                "empty": (b"", "application/json"),
                "bad-items": (
                    json.dumps({"organic": [1, "x", {"link": "javascript:alert(1)"}, {"title": 5, "link": None}]})
                    .encode(),
                    "application/json",
                ),
                "error-message": (b'{"message": "Not enough credits", "statusCode": 400}', "application/json"),
            }
            if kind in bodies:
                data, content_type = bodies[kind]
                return web.Response(body=data, headers={"Content-Type": content_type})
        return web.Response(status=404, text=f"no such test case {kind!r}")

    async def _drip(self, request: web.Request, json_api: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json" if json_api else "text/html"})
        await resp.prepare(request)
        try:
            for _ in range(600):  # one byte every 50 ms: each read comes in time, the whole never does
                await resp.write(b" ")
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def _huge(self, request: web.Request, json_api: bool, *, declared: bool) -> web.StreamResponse:
        """200 MB, generated as it is sent (never held in memory); stops when the client hangs up."""
        key = ("api-" if json_api else "") + ("huge" if declared else "huge-chunked")
        resp = web.StreamResponse(headers={"Content-Type": "application/json" if json_api else "text/html"})
        if declared:
            resp.content_length = HUGE_BYTES
        await resp.prepare(request)
        chunk = (b"<p>" + FACT.encode() + b" " + b"filler " * 9000 + b"</p>\n")[:65536]
        self.sent[key] = 0
        try:
            while self.sent[key] < HUGE_BYTES:
                n = min(len(chunk), HUGE_BYTES - self.sent[key])
                await resp.write(chunk[:n])
                self.sent[key] += n
        except (ConnectionError, RuntimeError):
            pass
        return resp


@pytest.fixture
async def hostile() -> AsyncIterator[HostileWeb]:
    web_ = HostileWeb()
    await web_.server.start_server()
    yield web_
    await web_.server.close()


@pytest.fixture
async def opener() -> AsyncIterator[PageOpener]:
    page_opener = PageOpener(config=FETCH)
    yield page_opener
    await page_opener.aclose()


@pytest.fixture
async def env(hostile: HostileWeb, opener: PageOpener) -> AsyncIterator[gym.Env]:
    made = gym.make(
        "drgym/WebResearch-v0",
        dataset=[{"question": QUESTION, "answers": [ANSWER]}],
        search="serper",
        search_kwargs={
            "base_url": hostile.url("/serper"),
            "api_key": "test-key",
            "page_opener": opener,
            "timeout_s": SEARCH_TIMEOUT_S,
            "retry": RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.1, max_total_s=SEARCH_RETRY_TOTAL_S,
                                 rng=random.Random(0)),
            "limiter": TokenBucket(1000.0, burst=100),
            "max_response_bytes": 1_000_000,
        },
        browse_time_budget_s=BROWSE_BUDGET_S,
        max_turns=1000,
    )
    await made.unwrapped.areset(options={"index": 0})
    yield made
    await made.unwrapped.backend.aclose()
    made.close()


def search_turn(query: str) -> str:
    return f'<think>s</think><tool_call>{json.dumps({"name": "web_search", "arguments": {"query": [query]}})}</tool_call>'


def browse_turn(url: str) -> str:
    call = {"name": "browse_webpage", "arguments": {"url_list": [url]}}
    return f"<think>b</think><tool_call>{json.dumps(call)}</tool_call>"


async def timed_step(env: gym.Env, action: str) -> tuple[str, dict[str, Any], float]:
    started = time.perf_counter()
    obs, reward, terminated, truncated, info = await env.unwrapped.astep(action)
    elapsed = time.perf_counter() - started
    assert reward == 0.0 and not terminated and not truncated
    assert obs.startswith("<tool_response>") and obs.endswith("</tool_response>")
    assert elapsed < STEP_LIMIT_S, f"the step took {elapsed:.2f} s"
    return obs, info, elapsed


async def read_page(env: gym.Env, hostile: HostileWeb, kind: str) -> tuple[str, dict[str, Any], float]:
    """Search for the page (so it is a seen URL), then browse it; return the browse step's outcome."""
    obs, info, _ = await timed_step(env, search_turn(f"page:{kind}"))
    assert info["error"] is None and hostile.url(f"/page/{kind}") in obs
    return await timed_step(env, browse_turn(hostile.url(f"/page/{kind}")))


def page_error(obs: str) -> str:
    assert "Error: this page could not be read (" in obs, obs[:600]
    return obs.split("Error: this page could not be read (", 1)[1]


# ----------------------------------------------------------------------------- control


async def test_a_good_page_reads_through_the_same_path(env: gym.Env, hostile: HostileWeb) -> None:
    obs, info, _ = await read_page(env, hostile, "ok")
    assert info["pages_read"] == 1 and FACT in obs and "About us" not in obs and "Error" not in obs


# ----------------------------------------------------------------------------- network faults on pages


@pytest.mark.parametrize(
    ("kind", "expected", "max_s"),
    [
        ("timeout", "timed out (read timeout)", FETCH.read_timeout + 1.0),
        ("drip", f"timed out after {FETCH.total_timeout:g} s", FETCH.total_timeout + 1.0),
        ("reset", "connection failed", 1.0),
        ("429", "HTTP 429", 1.0),
        ("429-long", "Retry-After: 3600 s", 1.0),
        ("429-bare", "HTTP 429", 1.0),
        ("500", "HTTP 500", 1.0),
        ("503", "HTTP 503", 1.0),
        ("loop-a", "redirect loop", 1.0),
        ("to-private", "a private address", 1.0),
        ("to-metadata", "the cloud metadata address", 1.0),
        ("to-file", "scheme 'file' is not allowed", 1.0),
    ],
)
async def test_page_faults_become_page_errors(
    env: gym.Env, hostile: HostileWeb, kind: str, expected: str, max_s: float
) -> None:
    obs, info, elapsed = await read_page(env, hostile, kind)
    assert expected in page_error(obs)
    assert info["pages_read"] == 0 and info["error"] is None, "a bad page is the page's error, not the step's"
    assert elapsed < max_s, f"{kind}: {elapsed:.2f} s"


async def test_retryable_page_statuses_are_retried_once(env: gym.Env, hostile: HostileWeb) -> None:
    for kind in ("429", "503", "reset"):
        await read_page(env, hostile, kind)
    assert hostile.hits["429"] == hostile.hits["503"] == 2, "one retry, then the error"
    assert hostile.hits["reset"] >= 2
    await read_page(env, hostile, "429-long")
    assert hostile.hits["429-long"] == 1, "a Retry-After beyond the limit is not waited for"
    await read_page(env, hostile, "500")
    assert hostile.hits["500"] == 1, "a 500 from a page is final"


# ----------------------------------------------------------------------------- oversized and hostile bodies


@pytest.mark.parametrize("kind", ["huge", "huge-chunked"])
async def test_a_200_mb_body_is_read_up_to_the_cap(env: gym.Env, hostile: HostileWeb, kind: str) -> None:
    obs, info, elapsed = await read_page(env, hostile, kind)
    assert info["pages_read"] == 1 and "Marta Quell" in obs, "the start of a huge page is still read"
    assert elapsed < 2.0
    await asyncio.sleep(0.2)  # let the server notice the client left
    assert hostile.sent[kind] < 64 * 1024 * 1024, f"{hostile.sent[kind]} bytes left the server"


async def test_a_gzip_bomb_inflates_only_up_to_the_cap(env: gym.Env, hostile: HostileWeb) -> None:
    tracemalloc.start()
    try:
        obs, info, elapsed = await read_page(env, hostile, "gzip-bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["pages_read"] == 1 and "bomb bomb" in obs
    assert peak < 40 * FETCH.max_decompressed_bytes, f"peak {peak / 1e6:.1f} MB for a 256 MiB bomb"
    assert elapsed < 2.0


@pytest.mark.parametrize("kind", ["charset-wrong", "charset-missing", "charset-bogus", "charset-mislabelled", "utf16"])
async def test_wrong_or_missing_charsets_still_read(env: gym.Env, hostile: HostileWeb, kind: str) -> None:
    obs, info, _ = await read_page(env, hostile, kind)
    assert info["pages_read"] == 1 and "Marta Quell" in obs and "Error" not in obs
    if kind == "charset-missing":
        assert "Café Zürich" in obs, "UTF-8 bytes without a label are sniffed as UTF-8"
    elif kind != "utf16":
        # A wrong label is followed, as browsers do: only the two accented letters suffer.
        assert "Caf" in obs and "rich. The Kellport" in obs


async def test_invalid_html_is_read(env: gym.Env, hostile: HostileWeb) -> None:
    obs, info, _ = await read_page(env, hostile, "invalid-html")
    assert info["pages_read"] == 1 and "Marta Quell" in obs and "<b>" not in obs


async def test_deeply_nested_html_returns_in_time(env: gym.Env, hostile: HostileWeb) -> None:
    obs, info, elapsed = await read_page(env, hostile, "deep-html")
    assert info["pages_read"] == 1 and "Marta Quell" in obs and "<div>" not in obs
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("binary-as-html", "looks like image/png"),
        ("binary-untyped", "not readable text"),  # aiohttp labels an untyped body application/octet-stream
        ("noise-as-html", "no readable text"),
        ("empty", "no readable text"),
        ("blank", "no readable text"),
        ("image", "content type 'image/png'"),
        ("zip", "content type 'application/zip'"),
        ("video", "content type 'video/mp4'"),
        ("octet", "content type 'application/octet-stream'"),
    ],
)
async def test_binary_empty_and_non_html_pages(env: gym.Env, hostile: HostileWeb, kind: str, expected: str) -> None:
    obs, info, _ = await read_page(env, hostile, kind)
    assert expected in page_error(obs) and info["pages_read"] == 0
    assert "\x00" not in obs and "PNG" not in obs


# ----------------------------------------------------------------------------- the search API misbehaving


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "not valid JSON"),
        ("not-object", "expected a JSON object"),
        ("organic-not-list", "`organic` is dict, expected a list"),
        ("html", "not valid JSON"),
        ("empty", "not valid JSON"),
        ("error-message", "Not enough credits"),
        ("huge", "response of 209715200 bytes exceeds 1000000"),
        ("huge-chunked", "response exceeds 1000000 bytes"),
        ("429", "429"),
        ("429-long", "3600"),
        ("429-bare", "429"),
        ("500", "HTTP 500"),
        ("503", "HTTP 503"),
        ("timeout", "no answer within"),
        ("drip", "no answer within"),
        ("reset", "connection failed"),
    ],
)
async def test_search_api_faults_become_the_observation(
    env: gym.Env, hostile: HostileWeb, kind: str, expected: str
) -> None:
    obs, info, elapsed = await timed_step(env, search_turn(f"api:{kind}"))
    assert f'Error: search for "api:{kind}" failed: serper' in obs and expected in obs, obs
    assert info["backend_errors"] == 1 and info["search_usage"]["failures"] == 1
    assert elapsed < SEARCH_RETRY_TOTAL_S + SEARCH_TIMEOUT_S + 0.5, f"{kind}: {elapsed:.2f} s"
    # the episode goes on
    obs, info, _ = await timed_step(env, search_turn("page:ok"))
    assert "About ok" in obs and info["backend_errors"] == 1


async def test_unusable_result_items_are_dropped(env: gym.Env, hostile: HostileWeb) -> None:
    obs, info, _ = await timed_step(env, search_turn("api:bad-items"))
    assert 'No results for query "api:bad-items"' in obs and "javascript" not in obs
    assert info["backend_errors"] == 0


# ----------------------------------------------------------------------------- memory stays flat

FAST_FAULTS = ("reset", "429-long", "500", "loop-a", "to-private", "binary-as-html", "empty", "image",
               "charset-wrong", "invalid-html", "gzip-bomb", "huge")


async def test_memory_stays_bounded_over_many_faulty_steps(env: gym.Env, hostile: HostileWeb) -> None:
    async def episode(kinds: tuple[str, ...]) -> None:
        await env.unwrapped.areset(options={"index": 0})
        for kind in kinds:
            await read_page(env, hostile, kind)
        await timed_step(env, search_turn("api:truncated"))

    await episode(FAST_FAULTS)  # warm-up: sessions, parsers, caches
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        steps = 0
        for _ in range(2):
            await episode(FAST_FAULTS)
            steps += 2 * len(FAST_FAULTS) + 1
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert steps >= 50
    growth = after - before
    assert growth < 1_000_000, f"memory grew by {growth / 1e6:.2f} MB over {steps} faulty steps"
    assert peak - before < 30_000_000, f"peak {peak / 1e6:.1f} MB above the start"


# ----------------------------------------------------------------------------- the mini-web's own faults, sync API


def miniweb_env(faults: FaultConfig, **kwargs: Any) -> Callable[[], gym.Env]:
    backend = MiniWebBackend(
        corpus="demo",
        faults=faults,
        search_api="serper",
        search_timeout_s=0.5,
        search_retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.1, max_total_s=1.0,
                                 rng=random.Random(0)),
        fetch_config=FetchConfig(per_host_rate=None, total_timeout=1.0, read_timeout=0.5, max_retries=1,
                                 retry_backoff=0.01, max_retry_after=0.5, max_redirects=0),
    )
    env = gym.make("drgym/WebResearch-v0", dataset="demo", search=backend, browse_time_budget_s=2.0, **kwargs)
    return env


def test_every_request_faulted_on_the_miniweb_sync_api() -> None:
    faults = FaultConfig(fault_rate=1.0, seed=1, retry_after_s=0.01, drip_interval_s=0.2)
    env = miniweb_env(faults)
    try:
        env.reset(options={"index": 0})
        for _ in range(4):
            started = time.perf_counter()
            obs, _, term, trunc, info = env.step(search_turn("tidal clock inventor"))
            assert time.perf_counter() - started < 2.5
            assert not term and not trunc and "Error:" in obs and "serper" in obs
        assert info["backend_errors"] == 4
        # pages fail too (URLs of the site, which every request faults)
        backend = env.unwrapped.backend
        url = env.unwrapped.services.run(backend.url_for("Tidal clock"))
        env.unwrapped._episode.seen_urls[url] = "tidal clock"
        for _ in range(3):
            started = time.perf_counter()
            obs, *_ = env.step(browse_turn(url))
            assert time.perf_counter() - started < 2.5
            assert "Error: this page could not be read (" in obs
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.close()


def test_some_requests_faulted_on_the_miniweb_episodes_still_finish() -> None:
    from drgym.agents.scripted import ScriptedAgent
    from drgym.runner import run_episode

    faults = FaultConfig(fault_rate=0.3, seed=7, retry_after_s=0.01, drip_interval_s=0.2, latency_ms=5)
    env = miniweb_env(faults)
    try:
        trajs = [run_episode(env, ScriptedAgent(), options={"index": i}) for i in range(8)]
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.close()
    assert all(t.error is None and t.terminated for t in trajs)
    assert all(turn.step_time_s < 2.5 for t in trajs for turn in t.turns)
    assert sum(t.f1 for t in trajs) > 0, "with retries, most reads still succeed"
