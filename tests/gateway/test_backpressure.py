"""A gateway under load: a bounded number of requests at work, a FIFO queue, 503 + Retry-After past it.

Also: CPU-heavy page work stays off the gateway's event loop (a huge page does not hold up a search).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from drgym.errors import BackendError, ConfigError
from drgym.gateway import wire
from drgym.gateway.admission import Admission, GatewayBusy
from drgym.gateway.client import GatewayBackend
from drgym.gateway.services import GatewayConfig
from drgym.retry import RetryPolicy
from tests.gateway.conftest import searxng


def _search_body(query: str) -> dict[str, object]:
    return {"query": query, "k": 3, "episode": "raw-episode"}


async def _wait_for_queries(upstream, count: int) -> None:
    while len(upstream.queries()) < count:
        await asyncio.sleep(0.01)


async def test_admission_is_first_come_first_served_and_refuses_past_the_queue() -> None:
    admission = Admission(max_in_flight=1, max_queue=1)
    order: list[str] = []
    release_first = asyncio.Event()
    first_in = asyncio.Event()

    async def first() -> None:
        async with admission.turn():
            first_in.set()
            order.append("first")
            await release_first.wait()

    async def second() -> float:
        async with admission.turn() as waited:
            order.append("second")
            return waited

    holder = asyncio.create_task(first())
    await first_in.wait()
    waiter = asyncio.create_task(second())
    while admission.waiting < 1:
        await asyncio.sleep(0)
    with pytest.raises(GatewayBusy) as busy:
        async with admission.turn():
            pass  # pragma: no cover - refused before the body runs
    assert 1 <= busy.value.retry_after_s <= 30 and admission.refused == 1
    assert order == ["first"]  # the second waits while the first holds the only turn
    release_first.set()
    await holder
    assert await waiter >= 0 and order == ["first", "second"]
    assert admission.in_flight == 0 and admission.waiting == 0


def test_admission_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_in_flight must be an integer >= 1"):
        Admission(max_in_flight=0)
    with pytest.raises(ConfigError, match="max_queue must be an integer >= 0"):
        Admission(max_queue=-1)


async def test_a_full_gateway_answers_503_busy_with_retry_after(run_gateway, upstream) -> None:
    upstream.delay_s = 1.0
    url = await run_gateway(searxng(upstream), max_in_flight=1, max_queue=0)
    async with aiohttp.ClientSession() as session:
        held = asyncio.create_task(session.post(f"{url}/v1/search", json=_search_body("holds the turn")))
        await _wait_for_queries(upstream, 1)
        async with session.post(f"{url}/v1/search", json=_search_body("turned away")) as resp:
            assert resp.status == 503
            assert float(resp.headers["Retry-After"]) >= 1
            error = (await resp.json())["error"]
        assert error["type"] == wire.BUSY and "at capacity" in error["message"]
        async with await held as first:
            assert first.status == 200
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
    assert upstream.queries() == ["holds the turn"]  # the refused request did nothing
    assert 'drgym_gateway_requests_total{endpoint="search",outcome="busy"} 1.0' in text
    assert 'drgym_gateway_errors_total{kind="busy"} 1.0' in text


async def test_the_client_waits_out_a_busy_gateway_and_gets_its_answer(run_gateway, upstream) -> None:
    upstream.delay_s = 0.5
    url = await run_gateway(searxng(upstream), max_in_flight=1, max_queue=0)
    client = GatewayBackend(url, retry=RetryPolicy.never())  # a Busy answer is not a failed attempt
    try:
        first = asyncio.create_task(client.search("first"))
        await _wait_for_queries(upstream, 1)
        second = await client.search("second")  # turned away at least once, then served
        assert [r.title for r in second][:1] == ["second result 1"]
        assert len(await first) == 3
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            text = await resp.text()
    finally:
        await client.aclose()
    assert upstream.queries() == ["first", "second"]
    busy = [line for line in text.splitlines() if line.startswith('drgym_gateway_errors_total{kind="busy"}')]
    assert busy and float(busy[0].split()[-1]) >= 1


async def test_a_gateway_busy_past_the_timeout_is_a_clear_error(run_gateway, upstream) -> None:
    upstream.delay_s = 2.0
    url = await run_gateway(searxng(upstream), max_in_flight=1, max_queue=0)
    client = GatewayBackend(url, timeout_s=0.5, retry=RetryPolicy.never())
    holder = GatewayBackend(url, retry=RetryPolicy.never())
    try:
        held = asyncio.create_task(holder.search("holds the turn"))
        await _wait_for_queries(upstream, 1)
        with pytest.raises(BackendError, match=r"stayed at capacity for 0.5 s \(timeout_s; it answered 503 Busy"):
            await client.search("never served")
        await held
    finally:
        await client.aclose()
        await holder.aclose()
    assert upstream.queries() == ["holds the turn"]


async def test_requests_past_max_in_flight_wait_their_turn_instead_of_failing(run_gateway, upstream) -> None:
    upstream.delay_s = 0.2
    url = await run_gateway(searxng(upstream), max_in_flight=2, max_queue=64)
    client = GatewayBackend(url, retry=RetryPolicy.never())
    try:
        answers = await asyncio.gather(*(client.search(f"query {i}") for i in range(12)))
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            text = await resp.text()
    finally:
        await client.aclose()
    assert all(len(a) == 3 for a in answers) and len(upstream.queries()) == 12
    waited = [line for line in text.splitlines() if line.startswith("drgym_gateway_queue_wait_seconds_sum")]
    assert waited and float(waited[0].split()[-1]) > 0  # some waited in the queue; none was refused
    assert 'kind="busy"' not in text


_HUGE_PAGE = (
    "<html><head><title>Huge</title></head><body>"
    + "".join(f"<div class='c{i}'><p>Paragraph {i} about the river and the town number {i}.</p></div>"
              for i in range(1500))
    + "</body></html>"
)


async def test_a_huge_page_does_not_hold_up_a_concurrent_search(run_gateway, upstream) -> None:
    from drgym.search.searxng import SearxngBackend
    from drgym.web.fetch import FetchConfig
    from drgym.web.opener import PageOpener

    upstream.pages["/huge"] = _HUGE_PAGE
    opener = PageOpener(config=FetchConfig(allow_hosts=frozenset({"127.0.0.1"}), per_host_rate=None))
    backend = SearxngBackend(base_url=upstream.url, language=None, page_opener=opener)
    url = await run_gateway(GatewayConfig(search=backend))
    client = GatewayBackend(url, retry=RetryPolicy.never())
    try:
        episode = client.episode_view()
        browser = client.browser(episode, max_pages_per_call=1, time_budget_s=120)
        from drgym.browse.memory import EpisodeMemory

        reading = asyncio.create_task(
            browser.browse([f"{upstream.url}/huge"], question="river town", subquestions={}, memory=EpisodeMemory())
        )
        while "/huge" not in upstream.paths:  # the page is fetched: its extraction is what runs now
            await asyncio.sleep(0.01)
        results = await client.search("while a huge page is read")
        assert len(results) == 3
        assert not reading.done()  # the search was answered while the huge page was still being worked on
        pages = await reading
        assert pages[0].error is None and "river" in pages[0].notes
    finally:
        await client.aclose()
        await opener.aclose()


async def test_waiting_for_a_connection_of_the_clients_own_pool_is_not_a_timeout(run_gateway, upstream) -> None:
    # One connection, three searches of 0.5 s each: the third waits about 1 s for the connection, then takes
    # 0.5 s. Only the time after it is sent counts against timeout_s (1.5 s), so none of them fails.
    upstream.delay_s = 0.5
    url = await run_gateway(searxng(upstream))
    client = GatewayBackend(url, timeout_s=1.5, connector_limit=1, retry=RetryPolicy.never())
    try:
        answers = await asyncio.gather(*(client.search(f"pooled {i}") for i in range(3)))
    finally:
        await client.aclose()
    assert [len(a) for a in answers] == [3, 3, 3]
    assert sorted(upstream.queries()) == ["pooled 0", "pooled 1", "pooled 2"]


def test_the_default_connection_pool_fits_the_open_file_limit() -> None:
    import resource

    from drgym.gateway.client import default_connector_limit

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = default_connector_limit()
    assert 64 <= limit <= 4096
    assert soft == resource.RLIM_INFINITY or limit <= max(64, soft // 2)
    assert GatewayBackend("http://127.0.0.1:9")._connector_limit == limit
