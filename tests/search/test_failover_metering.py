"""Failover between providers, metering, budgets and the query cache, against the loopback provider server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drgym.errors import BackendError, BudgetExceededError, ConfigError, RateLimitedError, ToolError
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search.brave import BraveBackend
from drgym.search.cache import SearchStore
from drgym.search.failover import FailoverBackend
from drgym.search.metering import (
    DEFAULT_PRICES_PER_1K,
    Budget,
    EpisodeView,
    Meter,
    MeteredBackend,
)
from drgym.search.replay import DEFAULT_CACHE_TTL_S, ReplayBackend
from drgym.search.serper import SerperBackend
from drgym.search.tavily import TavilyBackend

try:
    from .providers_server import KEYS, Fault, ProviderServer
except ImportError:  # tests/search is not a package
    from providers_server import KEYS, Fault, ProviderServer

RETRY = RetryPolicy(max_attempts=2, base_delay=0.005, max_delay=0.05, max_total_s=2.0, rng=random.Random(3))


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    async with ProviderServer() as srv:
        yield srv


@pytest.fixture
async def live(server: ProviderServer) -> AsyncIterator[dict]:
    common = {"retry": RETRY}
    made = {
        "serper": SerperBackend(
            api_key=KEYS["serper"],
            base_url=server.base_url("serper"),
            limiter=TokenBucket(1000, 100),
            **common,
        ),
        "brave": BraveBackend(
            api_key=KEYS["brave"], base_url=server.base_url("brave"), limiter=TokenBucket(1000, 100), **common
        ),
        "tavily": TavilyBackend(
            api_key=KEYS["tavily"],
            base_url=server.base_url("tavily"),
            limiter=TokenBucket(1000, 100),
            **common,
        ),
    }
    yield made
    for backend in made.values():
        await backend.aclose()


# ----------------------------------------------------------------------------- failover


async def test_failover_uses_the_next_backend_and_records_who_served(server: ProviderServer, live) -> None:
    chain = FailoverBackend([live["serper"], live["brave"]])
    assert chain.name == "serper+brave"
    server.fail("serper", *[Fault.status_code(503)] * 2)
    results = await chain.search("q", 3)
    assert {r.extras["provider"] for r in results} == {"brave"}
    assert chain.last_served == "brave"
    assert chain.served == {"brave": 1} and chain.failures == {"serper": 1}
    assert len(server.seen("serper")) == 2 and len(server.seen("brave")) == 1


async def test_failed_backend_cools_down_then_returns(server: ProviderServer, live) -> None:
    chain = FailoverBackend([live["serper"], live["brave"]], cooldown_s=0.2)
    server.fail("serper", *[Fault.status_code(500)] * 2)
    await chain.search("first", 1)
    await chain.search("second", 1)  # serper is cooling down: brave is asked first
    assert len(server.seen("serper")) == 2 and chain.last_served == "brave"
    await asyncio.sleep(0.25)
    await chain.search("third", 1)
    assert chain.last_served == "serper" and len(server.seen("serper")) == 3


async def test_cooling_backends_are_still_tried_when_nothing_else_works(server: ProviderServer, live) -> None:
    chain = FailoverBackend([live["serper"], live["brave"]], cooldown_s=60)
    server.fail("serper", *[Fault.status_code(500)] * 2)
    server.fail("brave", *[Fault.status_code(500)] * 2)
    with pytest.raises(BackendError):
        await chain.search("q", 1)
    assert len(await chain.search("q", 1)) == 1  # both cooling, both healthy again: the first answers
    assert chain.last_served == "serper"


async def test_failover_all_failing(server: ProviderServer, live) -> None:
    chain = FailoverBackend([live["serper"], live["brave"]])
    server.fail("serper", *[Fault.status_code(502)] * 2)
    server.fail("brave", Fault.malformed())
    with pytest.raises(
        BackendError,
        match=r"every search backend failed to search \(serper: .*HTTP 502.*; brave: "
        r"brave: response is not valid JSON",
    ) as info:
        await chain.search("q", 1)
    assert not isinstance(info.value, RateLimitedError)
    server.fail("serper", *[Fault.status_code(429, retry_after="0")] * 2)
    server.fail("brave", *[Fault.status_code(429, retry_after="0")] * 2)
    with pytest.raises(RateLimitedError, match="every search backend failed"):
        await chain.search("q", 1)


async def test_auth_failure_fails_over(server: ProviderServer, live) -> None:
    bad = SerperBackend(
        api_key="wrong", base_url=server.base_url("serper"), limiter=TokenBucket(1000), retry=RETRY
    )
    chain = FailoverBackend([bad, live["brave"]])
    try:
        assert len(await chain.search("q", 2)) == 2
    finally:
        await bad.aclose()
    assert chain.failures == {"serper": 1} and len(server.seen("serper")) == 1


async def test_budget_exhaustion_does_not_fail_over(server: ProviderServer, live) -> None:
    meter = Meter()
    spent = MeteredBackend(live["serper"], meter, Budget(per_episode=0))
    chain = FailoverBackend([spent, MeteredBackend(live["brave"], meter)])
    with pytest.raises(BudgetExceededError, match=r"search budget spent: 0 of 0 provider calls"):
        await chain.search("q", 1)
    assert server.seen("brave") == [] and server.seen("serper") == []


async def test_page_errors_are_not_failed_over(live) -> None:
    chain = FailoverBackend([live["serper"], live["brave"]])
    with pytest.raises(ToolError, match="no page reader configured for serper"):
        await chain.open("https://example.org")


def test_failover_validates() -> None:
    with pytest.raises(ConfigError, match="at least one backend"):
        FailoverBackend([])
    a = SerperBackend(api_key="k")
    with pytest.raises(ConfigError, match="distinct names"):
        FailoverBackend([a, a])


# ----------------------------------------------------------------------------- meter


async def test_meter_counts_calls_failures_and_spend(server: ProviderServer, live) -> None:
    meter = Meter()
    serper = MeteredBackend(live["serper"], meter)
    for i in range(3):
        await serper.search(f"q{i}", 2)
    server.fail("serper", *[Fault.status_code(503)] * 2)
    with pytest.raises(BackendError):
        await serper.search("fails", 2)
    summary = meter.summary()
    assert summary["providers"]["serper"] == {
        "calls": 4,
        "ok": 3,
        "failures": 1,
        "cache_hits": 0,
        "opens": 0,
        "est_spend_usd": pytest.approx(3 * DEFAULT_PRICES_PER_1K["serper"] / 1000),
        "price_per_1k_usd": DEFAULT_PRICES_PER_1K["serper"],
    }
    assert summary["total"]["calls"] == 4
    assert "estimate" in summary["note"]
    assert serper.usage.calls == 4 and serper.usage.failures == 1


async def test_meter_prices_are_configurable_and_cost_units_count(server: ProviderServer) -> None:
    meter = Meter({"tavily": 10.0, "custom": 2.0})
    advanced = TavilyBackend(
        api_key=KEYS["tavily"],
        base_url=server.base_url("tavily"),
        search_depth="advanced",
        limiter=TokenBucket(1000),
        retry=RETRY,
    )
    try:
        await MeteredBackend(advanced, meter).search("q", 1)
    finally:
        await advanced.aclose()
    assert meter.summary()["providers"]["tavily"]["est_spend_usd"] == pytest.approx(2 * 10.0 / 1000)
    meter.record_call("unknown-provider", ok=True)
    assert meter.summary()["unpriced"] == ["unknown-provider"]
    with pytest.raises(ConfigError, match="price per 1000 calls for 'x' must be a number >= 0"):
        Meter({"x": -1})
    meter.reset()
    assert meter.summary()["providers"] == {}


# ----------------------------------------------------------------------------- budget


async def test_per_episode_budget_and_new_episode(server: ProviderServer, live) -> None:
    metered = MeteredBackend(live["brave"], Meter(), Budget(per_episode=2))
    await metered.search("a", 1)
    await metered.search("b", 1)
    with pytest.raises(
        BudgetExceededError, match=r"2 of 2 provider calls used in this episode \(Budget.per_episode\)"
    ):
        await metered.search("c", 1)
    assert len(server.seen("brave")) == 2
    metered.new_episode()
    await metered.search("c", 1)


async def test_global_budget_spans_episodes(live) -> None:
    budget = Budget(per_episode=5, global_=3)
    metered = MeteredBackend(live["brave"], Meter(), budget)
    first, second = EpisodeView(metered), EpisodeView(metered)
    await first.search("a", 1)
    await first.search("b", 1)
    await second.search("c", 1)
    with pytest.raises(BudgetExceededError, match=r"global search budget spent: 3 of 3 provider calls"):
        await second.search("d", 1)
    assert budget.global_used == 3


async def test_refused_calls_are_refunded(live) -> None:
    budget = Budget(per_episode=1)
    metered = MeteredBackend(live["brave"], Meter(), budget)
    with pytest.raises(ToolError, match="empty search query"):
        await metered.search("  ", 1)
    assert metered.usage.calls == 0 and budget.global_used == 0
    await metered.search("real", 1)
    assert metered.usage.calls == 1


def test_budget_validates() -> None:
    with pytest.raises(ConfigError, match="Budget.per_episode must be None or an integer >= 0"):
        Budget(per_episode=-1)
    with pytest.raises(ConfigError, match="Budget.global_ must be None"):
        Budget(global_=2.5)  # type: ignore[arg-type]


async def test_concurrent_episodes_keep_separate_counts(server: ProviderServer, live) -> None:
    meter = Meter()
    budget = Budget(per_episode=3)
    chain = FailoverBackend(
        [MeteredBackend(live["serper"], meter, budget), MeteredBackend(live["brave"], meter, budget)]
    )
    views = [EpisodeView(chain) for _ in range(4)]
    assert all(isinstance(v, EpisodeView) and v.name == "serper+brave" for v in views)

    async def episode(view: EpisodeView, n: int) -> None:
        for i in range(n):
            await view.search(f"{id(view)}-{i}", 1)
            await asyncio.sleep(0)

    await asyncio.gather(*(episode(v, n) for v, n in zip(views, [1, 2, 3, 3])))
    assert [v.usage.calls for v in views] == [1, 2, 3, 3]
    with pytest.raises(BudgetExceededError):
        await views[3].search("one more", 1)
    assert meter.summary()["providers"]["serper"]["calls"] == 9
    # every call was charged to its view's episode, none to the wrappers' own default one
    assert all(member.usage.calls == 0 for member in chain.backends)
    assert views[0].usage.as_dict()["est_spend_usd"] == pytest.approx(DEFAULT_PRICES_PER_1K["serper"] / 1000)


async def test_failover_calls_all_count_against_the_episode(server: ProviderServer, live) -> None:
    meter = Meter()
    budget = Budget(per_episode=10)
    chain = FailoverBackend(
        [MeteredBackend(live["serper"], meter, budget), MeteredBackend(live["brave"], meter, budget)]
    )
    view = EpisodeView(chain)
    server.fail("serper", *[Fault.status_code(503)] * 2)
    await view.search("q", 1)
    assert view.usage.calls == 2 and view.usage.failures == 1
    assert meter.summary()["providers"]["brave"]["ok"] == 1


# ----------------------------------------------------------------------------- query cache


async def test_query_cache_serves_repeats_without_charging(
    tmp_path: Path, server: ProviderServer, live
) -> None:
    meter = Meter()
    budget = Budget(per_episode=1)
    store = SearchStore(tmp_path / "cache.sqlite")
    metered = MeteredBackend(live["serper"], meter, budget)
    cached = ReplayBackend(store, strict=False, inner=metered, ttl_s=DEFAULT_CACHE_TTL_S, meter=meter)
    view = EpisodeView(cached)
    first = await view.search("cached query", 3)
    second = await view.search("cached query", 3)  # the budget of 1 would refuse a second provider call
    assert second == first and [r.extras for r in second] == [r.extras for r in first]
    assert len(server.seen("serper")) == 1
    assert view.usage.calls == 1 and view.usage.cache_hits == 1
    assert meter.summary()["providers"]["serper"]["cache_hits"] == 1
    with pytest.raises(BudgetExceededError):
        await view.search("cached query", 4)  # another k is another key
    store.close()


async def test_query_cache_ttl_expires(tmp_path: Path, server: ProviderServer, live) -> None:
    store = SearchStore(tmp_path / "cache.sqlite")
    cached = ReplayBackend(store, strict=False, inner=live["brave"], ttl_s=0.05)
    await cached.search("q", 2)
    await cached.search("q", 2)
    assert len(server.seen("brave")) == 1
    await asyncio.sleep(0.08)
    await cached.search("q", 2)
    assert len(server.seen("brave")) == 2
    store.close()


async def test_query_cache_never_stores_errors(tmp_path: Path, server: ProviderServer, live) -> None:
    store = SearchStore(tmp_path / "cache.sqlite")
    cached = ReplayBackend(store, strict=False, inner=live["brave"])
    server.fail("brave", *[Fault.status_code(500)] * 2)
    with pytest.raises(BackendError):
        await cached.search("q", 2)
    assert len(await cached.search("q", 2)) == 2
    store.close()
