"""The mini-web: the site, the live path of MiniWebBackend (search client, guarded fetcher), the env."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import gymnasium as gym
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import drgym  # noqa: F401  (registers the env ids)
from drgym._loop import SyncRunner
from drgym.agents.scripted import ScriptedAgent
from drgym.data import load_corpus
from drgym.data.records import Passage
from drgym.errors import BlockedURLError, ConfigError, FetchError, ToolError
from drgym.miniweb import MiniWebBackend, article_path, create_app
from drgym.runner import arun_episodes, run_episode
from drgym.search import registry
from drgym.search.base import SearchBackend
from drgym.web.fetch import Fetcher

HOSTILE_TITLE = '<script>alert("t")</script> AC/DC? #1 & 100%'
HOSTILE_TEXT = 'Hostile text with <b>tags</b>, </p><script>evil()</script> & "quotes" kept as words.'
BOILERPLATE = (
    "cookies",
    "Accept all",
    "Related articles",
    "Printable version",
    "Privacy policy",
    "Share this article",
    "Main page",
    "Search MiniWeb",
    "Donate",
    "Creative Commons",
)


def search_turn(*queries: str) -> str:
    call = {"name": "web_search", "arguments": {"query": list(queries)}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


def browse_turn(*urls: str) -> str:
    call = {"name": "browse_webpage", "arguments": {"url_list": list(urls)}}
    return f"<think>read</think><tool_call>{json.dumps(call)}</tool_call>"


def hostile_passages() -> list[Passage]:
    return [
        *load_corpus("demo"),
        Passage("hostile-1", HOSTILE_TITLE, HOSTILE_TEXT, "tests"),
        Passage(
            "hostile-2",
            HOSTILE_TITLE,
            "A second paragraph of the hostile article about zanzibarite.",
            "tests",
        ),
    ]


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(hostile_passages(), corpus="demo"))) as c:
        yield c


@pytest.fixture
async def backend() -> AsyncIterator[MiniWebBackend]:
    b = MiniWebBackend(passages=hostile_passages(), corpus="demo")
    yield b
    await b.aclose()


# ----------------------------------------------------------------------------- the site


async def test_site_serves_an_article_page_with_boilerplate(client: TestClient) -> None:
    resp = await client.get(article_path("Kellport"))
    assert resp.status == 200 and resp.content_type == "text/html" and resp.charset == "utf-8"
    page = await resp.text()
    assert "<title>Kellport - MiniWeb</title>" in page and "<h1>Kellport</h1>" in page
    # both passages titled Kellport make one article, in corpus order
    first, second = (p.text for p in load_corpus("demo") if p.title == "Kellport")
    assert page.index(first[:40]) < page.index(second[:40])
    for part in ("<nav", "<aside", "<footer", 'id="cookie-banner"', "<script>", "<main", "<article>"):
        assert part in page


async def test_site_compresses_pages_when_asked(client: TestClient) -> None:
    resp = await client.get(article_path("Kellport"), headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert "Kellport" in await resp.text()


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the jobs it was given."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.jobs = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


async def test_articles_are_rendered_once_and_never_compressed_on_the_default_thread_pool() -> None:
    """Under load, searches (BM25) wait in asyncio's default thread pool: page compression must not queue there."""
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    long_article = [Passage(f"long-{i}", "Long article", f"Paragraph {i} about harbours and tides. " * 20, "tests")
                    for i in range(8)]
    async with TestClient(TestServer(create_app(long_article, corpus="demo"))) as c:
        bodies = set()
        for _ in range(20):
            resp = await c.get(article_path("Long article"), headers={"Accept-Encoding": "gzip"},
                               auto_decompress=False)
            assert resp.headers["Content-Encoding"] == "gzip"
            bodies.add(await resp.read())
        plain = await (await c.get(article_path("Long article"), headers={"Accept-Encoding": "identity"})).text()
    assert len(bodies) == 1
    assert gzip.decompress(next(iter(bodies))).decode() == plain and "Paragraph 7 about harbours" in plain
    assert len(plain.encode()) > 4096  # large enough that aiohttp would compress it in the executor
    assert executor.jobs == 0


async def test_site_escapes_untrusted_titles_and_text(client: TestClient) -> None:
    url = "/wiki/" + quote(HOSTILE_TITLE, safe="")
    assert url == article_path(HOSTILE_TITLE) and "%2F" in url and "%23" in url and "%3F" in url
    resp = await client.get(url)
    assert resp.status == 200
    page = await resp.text()
    assert "<script>alert" not in page and "<script>evil" not in page and "<b>tags</b>" not in page
    assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt; AC/DC? #1 &amp; 100%" in page
    assert "&lt;/p&gt;&lt;script&gt;evil()&lt;/script&gt;" in page


async def test_site_answers_404_robots_and_home(client: TestClient) -> None:
    for path in ("/wiki/No%20such%20article", "/wiki/", "/favicon.ico", "/static/site.css"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "Not found" in await resp.text()
    robots = await client.get("/robots.txt")
    assert robots.status == 200 and "User-agent: *" in await robots.text()
    home = await client.get("/")
    assert home.status == 200 and article_path("Veldan Coast") in await home.text()


async def test_search_api_speaks_searxng_json(client: TestClient) -> None:
    resp = await client.get("/search", params={"q": "Kellport glass harbour", "format": "json"})
    assert resp.status == 200 and resp.content_type == "application/json"
    payload = await resp.json()
    assert payload["query"] == "Kellport glass harbour"
    for key in (
        "number_of_results",
        "answers",
        "corrections",
        "infoboxes",
        "suggestions",
        "unresponsive_engines",
    ):
        assert key in payload
    results = payload["results"]
    assert 1 < len(results) <= 10
    origin = str(client.make_url("/")).rstrip("/")
    titles = [r["title"] for r in results]
    assert len(set(titles)) == len(titles), "one result per article, however many passages match"
    assert "Kellport" in titles
    for r in results:
        assert r["url"] == origin + article_path(r["title"])
        assert r["engine"] == "miniweb" and r["engines"] == ["miniweb"] and r["content"]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    page = await (await client.get(r["url"].removeprefix(origin))).text()
    assert "<h1>" in page, "every result URL is a page of the site"


async def test_search_api_pages_and_formats(client: TestClient) -> None:
    first = (await (await client.get("/search", params={"q": "the", "format": "json"})).json())["results"]
    second = (
        await (await client.get("/search", params={"q": "the", "format": "json", "pageno": "2"})).json()
    )["results"]
    assert len(first) == 10 and second
    assert not {r["url"] for r in first} & {r["url"] for r in second}
    assert [r["positions"][0] for r in second][:1] == [11]
    html_page = await client.get("/search", params={"q": "tidal clock"})
    assert html_page.status == 200 and "Tidal clock" in await html_page.text()
    assert (await client.get("/search", params={"q": "x", "format": "csv"})).status == 403
    assert (await client.get("/search", params={"q": "x", "format": "json", "pageno": "zero"})).status == 400
    empty = await (await client.get("/search", params={"q": "  ", "format": "json"})).json()
    assert empty["results"] == []
    nothing = await (await client.get("/search", params={"q": "qwertyzxcv", "format": "json"})).json()
    assert nothing["results"] == []


# ----------------------------------------------------------------------------- MiniWebBackend


async def test_backend_is_a_search_backend_and_validates_options() -> None:
    assert isinstance(MiniWebBackend(corpus="demo"), SearchBackend)
    with pytest.raises(ConfigError, match="loopback"):
        MiniWebBackend(corpus="demo", host="10.0.0.1")
    with pytest.raises(ConfigError, match="loopback IP address"):
        MiniWebBackend(corpus="demo", host="localhost")
    with pytest.raises(ConfigError, match="port"):
        MiniWebBackend(corpus="demo", port=70000)
    with pytest.raises(ConfigError, match="results_per_page"):
        MiniWebBackend(corpus="demo", results_per_page=0)


async def test_search_then_open_returns_the_article_without_boilerplate(backend: MiniWebBackend) -> None:
    base = await backend.start()
    assert base.startswith("http://127.0.0.1:")
    results = await backend.search("Who invented the tidal clock?", 5)
    assert 1 <= len(results) <= 5
    top = results[0]
    assert top.title == "Tidal clock" and top.url == base + article_path("Tidal clock")
    assert (
        top.extras["provider"] == "miniweb"
        and top.extras["engine"] == "miniweb"
        and top.extras["position"] == 1
    )
    assert "Ilse Varrow" in top.snippet
    doc = await backend.open(top.url)
    assert doc.title == "Tidal clock" and doc.url == top.url and doc.content_type == "text/markdown"
    text = next(p.text for p in load_corpus("demo") if p.title == "Tidal clock")
    assert " ".join(text.split()[:12]) in " ".join(doc.content.split())
    for junk in BOILERPLATE:
        assert junk not in doc.content, f"boilerplate {junk!r} survived extraction"


async def test_open_multi_passage_and_hostile_articles(backend: MiniWebBackend) -> None:
    doc = await backend.open(await backend.url_for("Kellport"))
    flat = " ".join(doc.content.split())
    for passage in (p for p in load_corpus("demo") if p.title == "Kellport"):
        assert " ".join(passage.text.split()[:10]) in flat
    hostile = await backend.open(await backend.url_for(HOSTILE_TITLE))
    assert hostile.title == HOSTILE_TITLE
    assert "evil()" in hostile.content and "zanzibarite" in hostile.content, "markup in text stays words"
    (hit,) = [r for r in await backend.search("zanzibarite", 10)]
    # the SearxNG client strips tag-shaped text from titles, as it does for every provider; the URL is exact
    assert hit.title == 'alert("t") AC/DC? #1 & 100%' and hit.url == await backend.url_for(HOSTILE_TITLE)


async def test_missing_page_and_bad_queries_are_typed_errors(backend: MiniWebBackend) -> None:
    with pytest.raises(FetchError, match="404"):
        await backend.open(await backend.url_for("No such article"))
    with pytest.raises(ToolError, match="empty search query"):
        await backend.search("   ", 10)
    with pytest.raises(ConfigError, match="k must be"):
        await backend.search("kellport", 0)


@pytest.fixture
async def other_service() -> AsyncIterator[TestServer]:
    """Another loopback service (think: an admin console) the policy must never reach."""
    hits: list[str] = []
    app = web.Application()

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="<html><body><p>internal secret</p></body></html>", content_type="text/html")

    app.router.add_get("/{tail:.*}", secret)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.hits = hits  # type: ignore[attr-defined]
    yield server
    await server.close()


async def test_ssrf_guard_blocks_other_loopback_ports_and_hosts(
    backend: MiniWebBackend, other_service: TestServer
) -> None:
    base = await backend.start()
    port = other_service.port
    assert f":{port}" not in base
    for url in (
        f"http://127.0.0.1:{port}/admin",
        f"http://127.0.0.1:{port}{article_path('Kellport')}",
        f"http://localhost:{port}/admin",
        f"http://127.0.0.2:{port}/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://example.org/wiki/Kellport",
        base.replace("http://", "https://") + article_path("Kellport"),
        "file:///etc/passwd",
        "not a url",
    ):
        with pytest.raises(BlockedURLError, match="miniweb reads only pages of its own site"):
            await backend.open(url)
    # The fetcher's own guard: only the site's address is allow-listed; other internal addresses are refused.
    assert backend.fetch_config.allow_hosts == frozenset({"127.0.0.1"})
    async with Fetcher(backend.fetch_config) as fetcher:
        for url in (
            f"http://127.0.0.2:{port}/admin",
            f"http://[::1]:{port}/",
            "http://10.1.2.3/",
            "http://0x7f.2/",
        ):
            with pytest.raises(BlockedURLError):
                await fetcher.fetch(url)
    assert other_service.hits == []  # type: ignore[attr-defined]


async def test_backend_serves_every_event_loop_from_one_site_on_its_own_loop(backend: MiniWebBackend) -> None:
    here = await backend.start()
    runner = SyncRunner()  # what an env's services run the sync API on: here, its background loop
    there = runner.run(backend.start())
    assert here == there
    assert any(t.name.startswith("drgym-miniweb-") for t in threading.enumerate()), "the site has its own thread"
    url_there = runner.run(backend.url_for("Kellport"))
    doc = await backend.open(url_there)
    assert doc.title == "Kellport" and doc.url.startswith(here)
    assert runner.run(backend.search("tidal clock", 3))[0].url.startswith(there)
    await backend.aclose()  # closes both loops' clients, the other one on its own loop, and stops the site
    assert not any(t.name.startswith("drgym-miniweb-") for t in threading.enumerate())
    with pytest.raises(FetchError, match="connection failed"):
        async with Fetcher(dataclasses.replace(backend.fetch_config, max_retries=0)) as fetcher:
            await fetcher.fetch(url_there)
    again = await backend.start()
    assert again.startswith("http://127.0.0.1:"), "usable again after aclose"
    # A URL from the site before aclose is read from the new one (same content), never refused.
    assert (await backend.open(url_there)).url.startswith(again)
    await backend.aclose()
    runner.close()


async def test_the_site_answers_while_the_callers_loop_is_busy(backend: MiniWebBackend) -> None:
    """The site does not wait behind the episodes' callbacks: it answers a raw request while this loop is stuck."""
    base = await backend.start()
    host, port = base.removeprefix("http://").split(":")
    answered = threading.Event()

    def ask() -> None:
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if conn.recv(64).startswith(b"HTTP/1.1 200"):
                answered.set()

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(2.0)  # noqa: ASYNC251  # blocks this loop on purpose: a site on it could not answer
    asker.join(timeout=5)
    assert answered.is_set()


async def test_many_concurrent_reads(backend: MiniWebBackend) -> None:
    titles = sorted({p.title for p in load_corpus("demo")})
    urls = [await backend.url_for(t) for t in titles]
    docs = await asyncio.gather(*(backend.open(u) for u in urls))
    assert [d.title for d in docs] == titles


# ----------------------------------------------------------------------------- the env on miniweb


def test_scripted_agent_scores_like_the_local_backend() -> None:
    mini = MiniWebBackend(corpus="demo")
    try:
        scores = {}
        for name, search in (("local", "local"), ("miniweb", mini)):
            env = gym.make("drgym/WebResearch-v0", dataset="demo", search=search)
            trajs = [
                run_episode(env, ScriptedAgent(), options={"index": i})
                for i in range(len(env.unwrapped.records))
            ]
            env.close()
            assert all(t.error is None and t.terminated for t in trajs)
            assert all([t.tool for t in t_.turns[:2]] == ["web_search", "browse_webpage"] for t_ in trajs)
            assert all(t.pages_read >= 1 for t in trajs)
            scores[name] = sum(t.f1 for t in trajs) / len(trajs)
        assert scores["miniweb"] > 0.0
        assert scores["miniweb"] >= scores["local"] - 0.1, scores
    finally:
        asyncio.run(mini.aclose())


async def test_many_concurrent_episodes_on_one_loop(backend: MiniWebBackend) -> None:
    def make_env() -> gym.Env:
        return gym.make("drgym/WebResearch-v0", dataset="demo", search=backend)

    trajs = await arun_episodes(make_env, ScriptedAgent, episodes=22, seed=0, concurrency=8)
    again = await arun_episodes(make_env, ScriptedAgent, episodes=22, seed=0, concurrency=3)
    assert all(t.error is None and t.terminated and t.pages_read >= 1 for t in trajs)
    assert [(t.record_id, t.f1) for t in trajs] == [(t.record_id, t.f1) for t in again]


def test_env_by_name_through_the_live_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BACKENDS, "miniweb", "drgym.miniweb.backend:MiniWebBackend")
    env = gym.make("drgym/WebResearch-v0", dataset="demo", search="miniweb", search_kwargs={"corpus": "demo"})
    try:
        env.reset(options={"index": 0})
        obs, _, _, _, info = env.step(search_turn("tidal clock inventor"))
        assert info["error"] is None and "http://127.0.0.1:" in obs and "Tidal clock" in obs
        assert info["search_usage"]["calls"] == 1, "a named miniweb is metered like a live provider"
        url = next(u for u in env.unwrapped._episode.seen_urls if u.endswith(article_path("Tidal clock")))
        obs, _, _, _, info = env.step(browse_turn(url))
        assert info["pages_read"] == 1 and "1824" in obs and "cookies" not in obs
        *_, info = env.step("<think>done</think><answer>Ilse Varrow</answer>")
        assert info["f1"] == 1.0
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.close()


@pytest.mark.slow  # builds the wiki-local index (about 10 s) unless this session already has
@pytest.mark.usefixtures("data_mirror")
def test_wiki_local_corpus_on_hotpotqa() -> None:
    mini = MiniWebBackend()  # wiki-local, sharing the `local` backend's index
    try:
        env = gym.make("drgym/WebResearch-v0", dataset="hotpotqa-dev500", search=mini)
        trajs = [run_episode(env, ScriptedAgent(), options={"index": i}) for i in range(4)]
        assert all(t.error is None and t.terminated and t.pages_read >= 1 for t in trajs)
        assert sum(t.f1 for t in trajs) > 0.0
    finally:
        asyncio.run(mini.aclose())
