"""Live provider backends against a loopback server speaking each provider's documented API."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from drgym.document import Document
from drgym.errors import BackendError, ConfigError, FetchError, RateLimitedError, ToolError
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search._http import HttpSearchBackend, clean_text
from drgym.search.base import SearchBackend
from drgym.search.brave import BraveBackend
from drgym.search.searxng import SearxngBackend
from drgym.search.serper import SerperBackend
from drgym.search.stack import SearchConfig
from drgym.search.tavily import TavilyBackend
from drgym.services import ToolServices

try:
    from .providers_server import KEYS, SEARXNG_PAGE_SIZE, Fault, ProviderServer
except ImportError:  # tests/search is not a package
    from providers_server import KEYS, SEARXNG_PAGE_SIZE, Fault, ProviderServer

FAST_RETRY = RetryPolicy(
    max_attempts=3, base_delay=0.005, max_delay=0.2, max_total_s=3.0, rng=random.Random(1)
)
CLASSES: dict[str, type[HttpSearchBackend]] = {
    "serper": SerperBackend,
    "brave": BraveBackend,
    "tavily": TavilyBackend,
    "searxng": SearxngBackend,
}


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    async with ProviderServer() as srv:
        yield srv


def make(server: ProviderServer, provider: str, **kwargs) -> HttpSearchBackend:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("limiter", TokenBucket(1000.0, burst=100))
    if provider in KEYS:
        kwargs.setdefault("api_key", KEYS[provider])
    return CLASSES[provider](base_url=server.base_url(provider), **kwargs)


@pytest.fixture
async def backends(server: ProviderServer) -> AsyncIterator[dict[str, HttpSearchBackend]]:
    made = {name: make(server, name) for name in CLASSES}
    yield made
    for backend in made.values():
        await backend.aclose()


# ----------------------------------------------------------------------------- request and response schemas


async def test_serper_request_and_results(server: ProviderServer, backends) -> None:
    results = await backends["serper"].search("  deep research  ", 3)
    (seen,) = server.seen("serper")
    assert seen.method == "POST" and seen.path == "/serper/search"
    assert seen.headers["X-API-KEY"] == KEYS["serper"]
    assert seen.headers["Content-Type"].startswith("application/json")
    assert seen.body == {"q": "deep research", "num": 3, "gl": "us", "hl": "en"}
    assert [r.extras["position"] for r in results] == [1, 2, 3]
    first = results[0]
    assert first.title == "deep research & result 1"
    assert first.snippet == "About deep research: fact number 1 — x < 2."
    assert first.url.startswith("https://example.org/")
    assert first.extras["provider"] == "serper" and first.extras["date"] == "Mar 3, 2024"
    assert "date" not in results[1].extras
    assert isinstance(backends["serper"], SearchBackend)


async def test_serper_answer_box_and_knowledge_graph_go_to_first_result(backends) -> None:
    results = await backends["serper"].search("who wrote the first program", 2)
    assert results[0].extras["answer_box"]["answer"] == "Ada & Lovelace"
    graph = results[0].extras["knowledge_graph"]
    assert graph["description"] == "English mathematician." and graph["attributes"] == {
        "Born": "10 December 1815"
    }
    assert "answer_box" not in results[1].extras


async def test_brave_request_and_results(server: ProviderServer, backends) -> None:
    results = await backends["brave"].search("rl environments", 4)
    (seen,) = server.seen("brave")
    assert seen.method == "GET" and seen.path == "/brave/res/v1/web/search"
    assert seen.query == {"q": "rl environments", "count": "4"}
    assert seen.headers["X-Subscription-Token"] == KEYS["brave"]
    assert seen.headers["Accept"] == "application/json"
    assert len(results) == 4
    assert results[0].snippet == "About rl environments: fact number 1 — x < 2."  # <strong> and entities gone
    assert results[0].extras["age"] == "2 days ago" and results[0].extras["date"] == "2024-05-01T10:00:00"


async def test_brave_count_is_capped_at_its_documented_maximum(server: ProviderServer, backends) -> None:
    results = await backends["brave"].search("many", 50)
    assert server.seen("brave")[0].query["count"] == "20"
    assert len(results) == 20


async def test_brave_optional_locale(server: ProviderServer) -> None:
    backend = make(server, "brave", country="us", search_lang="en")
    try:
        await backend.search("q", 2)
    finally:
        await backend.aclose()
    assert server.seen("brave")[0].query == {"q": "q", "count": "2", "country": "us", "search_lang": "en"}


async def test_tavily_request_and_results(server: ProviderServer, backends) -> None:
    results = await backends["tavily"].search("grpo", 5)
    (seen,) = server.seen("tavily")
    assert seen.method == "POST" and seen.path == "/tavily/search"
    assert seen.headers["Authorization"] == f"Bearer {KEYS['tavily']}"
    assert "api_key" not in seen.body  # the key travels in the header only
    assert seen.body["query"] == "grpo" and seen.body["max_results"] == 5
    assert seen.body["search_depth"] == "basic" and seen.body["include_raw_content"] is False
    assert [r.extras["score"] for r in results] == sorted((r.extras["score"] for r in results), reverse=True)
    assert results[0].snippet == "About grpo: fact number 1 — x < 2."


def test_tavily_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="search_depth must be 'basic' or 'advanced'"):
        TavilyBackend(api_key="k", search_depth="deep")
    assert TavilyBackend(api_key="k", search_depth="advanced").cost_units == 2.0


async def test_searxng_request_and_results(server: ProviderServer, backends) -> None:
    results = await backends["searxng"].search("metasearch", 3)
    (seen,) = server.seen("searxng")
    assert seen.path == "/searxng/search"
    assert seen.query["q"] == "metasearch" and seen.query["format"] == "json"
    assert len(results) == 3
    assert results[0].extras["engine"] == "duckduckgo" and results[0].extras["date"] == "2024-01-02T00:00:00"
    assert "date" not in results[1].extras  # publishedDate null → left out
    many = await backends["searxng"].search("metasearch", 40)
    assert len(many) == SEARXNG_PAGE_SIZE  # one page, no count parameter


# ----------------------------------------------------------------------------- configuration and secrets


@pytest.mark.parametrize(
    ("cls", "var"),
    [(SerperBackend, "SERPER_API_KEY"), (BraveBackend, "BRAVE_API_KEY"), (TavilyBackend, "TAVILY_API_KEY")],
)
def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch, cls, var: str) -> None:
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=f"no API key; set the environment variable {var}"):
        cls()


async def test_key_read_from_environment(monkeypatch: pytest.MonkeyPatch, server: ProviderServer) -> None:
    monkeypatch.setenv("SERPER_API_KEY", KEYS["serper"])
    backend = SerperBackend(base_url=server.base_url("serper"), limiter=TokenBucket(1000))
    try:
        assert len(await backend.search("q", 1)) == 1
    finally:
        await backend.aclose()


def test_searxng_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARXNG_URL", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable SEARXNG_URL"):
        SearxngBackend()
    monkeypatch.setenv("SEARXNG_URL", "http://127.0.0.1:8888/")
    assert SearxngBackend().base_url == "http://127.0.0.1:8888"
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        SearxngBackend(base_url="ftp://example.org")


async def test_wrong_key_is_not_retried_and_never_leaks(server: ProviderServer) -> None:
    for provider, status in (("serper", 403), ("brave", 401), ("tavily", 401)):
        secret = f"secret-{provider}-do-not-print"
        backend = make(server, provider, api_key=secret)
        try:
            with pytest.raises(
                BackendError, match=f"{provider}: HTTP {status}, the request was refused"
            ) as info:
                await backend.search("q", 3)
        finally:
            await backend.aclose()
        assert not isinstance(info.value, RateLimitedError)
        assert len(server.seen(provider)) == 1
        assert secret not in str(info.value) and secret not in repr(backend)
        assert provider.upper() + "_API_KEY" in str(info.value)


async def test_redaction_when_a_provider_echoes_the_key(server: ProviderServer) -> None:
    backend = make(server, "serper")
    server.fail("serper", Fault.status_code(400, body=f'{{"message": "bad key {KEYS["serper"]}"}}'.encode()))
    try:
        with pytest.raises(BackendError, match=r"serper: HTTP 400.*bad key \*\*\*") as info:
            await backend.search("q", 1)
    finally:
        await backend.aclose()
    assert KEYS["serper"] not in str(info.value)


async def test_plan_limit_statuses_are_explained(server: ProviderServer, backends) -> None:
    server.fail("tavily", Fault.status_code(432, body=b'{"detail": {"error": "Plan limit exceeded"}}'))
    with pytest.raises(BackendError, match="tavily: HTTP 432, the provider rejected the request: Plan limit"):
        await backends["tavily"].search("q", 1)


async def test_searxng_without_json_format_hints_at_settings(server: ProviderServer) -> None:
    class HtmlOnly(SearxngBackend):
        def _build_request(self, query, k):
            request = super()._build_request(query, k)
            return type(request)(request.method, request.path, params={**request.params, "format": "html"})

    backend = HtmlOnly(base_url=server.base_url("searxng"), limiter=TokenBucket(1000), retry=FAST_RETRY)
    try:
        with pytest.raises(BackendError, match=r"HTTP 403.*search\.formats"):
            await backend.search("q", 1)
    finally:
        await backend.aclose()


async def test_bad_arguments(backends) -> None:
    with pytest.raises(ToolError, match="empty search query"):
        await backends["serper"].search("   ", 3)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        await backends["serper"].search("q", 0)


# ----------------------------------------------------------------------------- faults


async def test_429_with_retry_after_then_success(server: ProviderServer, backends) -> None:
    server.fail("serper", Fault.status_code(429, retry_after="0.05"))
    start = time.monotonic()
    results = await backends["serper"].search("q", 2)
    assert len(results) == 2
    assert len(server.seen("serper")) == 2
    assert time.monotonic() - start >= 0.05 - 0.01  # the Retry-After was honoured


async def test_brave_rate_limit_reset_header_stands_in_for_retry_after(
    server: ProviderServer, backends
) -> None:
    server.fail("brave", Fault.status_code(429, headers={"X-RateLimit-Reset": "0.05, 1419704"}))
    start = time.monotonic()
    assert len(await backends["brave"].search("q", 2)) == 2
    assert time.monotonic() - start >= 0.04


async def test_persistent_429_raises_rate_limited(server: ProviderServer, backends) -> None:
    server.fail("brave", *[Fault.status_code(429, retry_after="0")] * 5)
    with pytest.raises(
        RateLimitedError, match=r"brave search failed: HTTP 429.*no attempts left \(max_attempts=3\)"
    ):
        await backends["brave"].search("q", 2)
    assert len(server.seen("brave")) == 3


async def test_retry_after_beyond_budget_gives_up_at_once(server: ProviderServer, backends) -> None:
    server.fail("tavily", Fault.status_code(429, retry_after="3600"))
    start = time.monotonic()
    with pytest.raises(RateLimitedError, match=r"asked to retry after 3600 s \(Retry-After\)"):
        await backends["tavily"].search("q", 2)
    assert time.monotonic() - start < 1.0
    assert len(server.seen("tavily")) == 1


async def test_503s_then_success(server: ProviderServer, backends) -> None:
    server.fail("searxng", Fault.status_code(503), Fault.status_code(502))
    assert len(await backends["searxng"].search("q", 2)) == 2
    assert len(server.seen("searxng")) == 3


async def test_timeout_is_retried_then_reported(server: ProviderServer) -> None:
    backend = make(
        server,
        "serper",
        timeout_s=0.1,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01, max_total_s=2.0),
    )
    server.fail("serper", Fault.slow(0.6), Fault.slow(0.6))
    start = time.monotonic()
    try:
        with pytest.raises(
            BackendError, match=r"serper search failed: no answer within 0\.1 s; no attempts left"
        ):
            await backend.search("q", 2)
        assert time.monotonic() - start < 0.6
        server.fail("serper", Fault.slow(0.6))
        assert len(await backend.search("q", 2)) == 2  # second attempt answers in time
    finally:
        await backend.aclose()


async def test_retry_budget_bounds_a_slow_provider(server: ProviderServer) -> None:
    backend = make(
        server,
        "serper",
        timeout_s=5.0,
        retry=RetryPolicy(max_attempts=50, base_delay=0.01, max_delay=0.01, max_total_s=0.3),
    )
    server.fail("serper", *[Fault.slow(1.0)] * 3)
    start = time.monotonic()
    try:
        with pytest.raises(BackendError, match="serper search failed"):
            await backend.search("q", 2)
    finally:
        await backend.aclose()
    assert time.monotonic() - start < 0.9  # each attempt's timeout shrinks to what is left of max_total_s


async def test_dropped_connection_is_retried(server: ProviderServer, backends) -> None:
    server.fail("brave", Fault.drop())
    assert len(await backends["brave"].search("q", 2)) == 2


async def test_connection_refused_becomes_backend_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = SerperBackend(
        api_key="k", base_url=f"http://127.0.0.1:{port}", limiter=TokenBucket(1000), retry=FAST_RETRY
    )
    try:
        with pytest.raises(BackendError, match=r"serper search failed: connection failed \(Client\w+Error\)"):
            await backend.search("q", 1)
    finally:
        await backend.aclose()


async def test_malformed_json_is_a_backend_error_not_retried(server: ProviderServer, backends) -> None:
    server.fail("serper", Fault.malformed())
    with pytest.raises(BackendError, match=r"serper: response is not valid JSON .* it starts '\{\"organic\""):
        await backends["serper"].search("q", 2)
    assert len(server.seen("serper")) == 1


@pytest.mark.parametrize(
    ("provider", "body", "message"),
    [
        ("serper", b'{"organic": {"title": "x"}}', "serper: unexpected response schema: `organic` is dict"),
        ("brave", b'{"web": ["x"]}', "brave: unexpected response schema: `web` is not an object"),
        ("tavily", b"[1, 2]", "tavily: unexpected response schema: expected a JSON object, got list"),
        ("searxng", b'{"results": "none"}', "searxng: unexpected response schema: `results` is str"),
        (
            "serper",
            b'{"message": "Not enough credits", "statusCode": 400}',
            "serper: the provider answered with an error: Not enough credits",
        ),
    ],
)
async def test_unexpected_schema(
    server: ProviderServer, backends, provider: str, body: bytes, message: str
) -> None:
    server.fail(provider, Fault.raw(body))
    with pytest.raises(BackendError, match=message):
        await backends[provider].search("q", 2)


async def test_items_without_usable_urls_are_skipped(server: ProviderServer, backends) -> None:
    body = (
        b'{"results": [{"url": "javascript:alert(1)", "title": "x"}, 7, {"title": "no url"},'
        b' {"url": "https://ok.example/a", "title": "<b>Ok</b>", "content": "fine"},'
        b' {"url": "https://ok.example/a", "title": "duplicate"}]}'
    )
    server.fail("searxng", Fault.raw(body))
    results = await backends["searxng"].search("q", 10)
    assert [(r.title, r.url, r.extras["position"]) for r in results] == [("Ok", "https://ok.example/a", 1)]


async def test_oversized_response_is_refused(server: ProviderServer) -> None:
    backend = make(server, "serper", max_response_bytes=200)
    try:
        with pytest.raises(BackendError, match="serper: response .*exceeds 200"):
            await backend.search("q", 20)
    finally:
        await backend.aclose()


# ----------------------------------------------------------------------------- limits, sessions, pages


async def test_requests_go_through_the_rate_limiter(server: ProviderServer) -> None:
    backend = make(server, "tavily", limiter=TokenBucket(40.0, burst=1))
    start = time.monotonic()
    try:
        await asyncio.gather(*(backend.search(f"q{i}", 1) for i in range(5)))
    finally:
        await backend.aclose()
    assert time.monotonic() - start >= 4 / 40 - 0.02


def test_stacks_of_one_services_share_a_limiter_per_provider_and_plain_backends_share_none() -> None:
    a = BraveBackend(api_key="k", rps=3.0)
    b = BraveBackend(api_key="k", rps=3.0)
    assert a.limiter is not b.limiter and a.limiter.rate == 3.0, "nothing is shared behind the caller's back"
    with ToolServices() as services, ToolServices() as other:
        def brave(owner: ToolServices, budget: int | None) -> BraveBackend:
            config = SearchConfig(search="brave", search_kwargs={"api_key": "k", "rps": 3.0}, budget_global=budget)
            return owner.stack(config).inner  # the MeteredBackend's provider
        one, two = brave(services, None), brave(services, 5)  # two configurations, one provider quota
        assert one is not two and one.limiter is two.limiter and one.limiter.rate == 3.0
        assert services.limiter("search:brave", 3.0) is one.limiter
        assert brave(other, None).limiter is not one.limiter


async def test_one_session_per_loop(server: ProviderServer) -> None:
    backend = make(server, "serper")
    try:
        await backend.search("here", 1)
        first = backend._sessions.get()
        await backend.search("again", 1)
        assert backend._sessions.get() is first
        # The same backend used from another thread's loop gets its own session, and the first is untouched.
        seen: list[aiohttp.ClientSession] = []

        async def elsewhere() -> list:
            try:
                results = await backend.search("elsewhere", 1)
                seen.append(backend._sessions.get())
                return results
            finally:
                await backend.aclose_loop_session()

        assert len(await asyncio.to_thread(asyncio.run, elsewhere())) == 1
        assert seen[0] is not first and seen[0].closed
        assert backend._sessions.get() is first and not first.closed
    finally:
        await backend.aclose()
        await backend.aclose()  # twice is fine
    assert first.closed


async def test_aclose_reaches_sessions_of_other_running_loops(server: ProviderServer) -> None:
    backend = make(server, "serper")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        results = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(backend.search("bg", 1), loop))
        assert len(results) == 1
        (other,) = backend._sessions._sessions.values()
        await backend.aclose()  # from this loop: the background loop's session is closed on its own loop
        for _ in range(100):
            if other.closed:
                break
            await asyncio.sleep(0.01)
        assert other.closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_sessions_of_ended_loops_are_dropped(server: ProviderServer) -> None:
    backend = make(server, "serper")
    try:
        await asyncio.to_thread(asyncio.run, backend.search("short-lived loop", 1))  # never closed there
        assert len(backend._sessions._sessions) == 1
        assert len(await backend.search("here", 1)) == 1
        assert list(backend._sessions._sessions) == [asyncio.get_running_loop()]
    finally:
        await backend.aclose()
        gc.collect()  # the dead loop's sockets are freed here, inside this test's warning filters


async def test_open_without_reader_is_a_fetch_error(backends) -> None:
    with pytest.raises(FetchError, match="no page reader configured for serper"):
        await backends["serper"].open("https://example.org/")


async def test_open_uses_the_injected_reader(server: ProviderServer) -> None:
    server.pages["ada"] = "<html><title>Ada</title><body>Ada Lovelace wrote the first program.</body></html>"

    async def reader(url: str) -> Document:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            resp.raise_for_status()
            text = await resp.text()
        return Document(url=url, title="Ada", content=clean_text(text), source="test")

    backend = make(server, "brave", page_opener=reader)
    try:
        doc = await backend.open(server.page_url("ada"))
    finally:
        await backend.aclose()
    assert doc.content == "Ada Ada Lovelace wrote the first program."


def test_clean_text_keeps_comparisons_and_decodes_entities() -> None:
    assert clean_text("a <b>bold</b> &amp; x < 5 and y > 3<br/>") == "a bold & x < 5 and y > 3"
    assert clean_text("&lt;script&gt;alert(1)&lt;/script&gt;") == "<script>alert(1)</script>"
    assert clean_text("line\n\n  two<!-- hidden -->") == "line two"
    assert clean_text(None) == ""
