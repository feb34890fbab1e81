"""The read-write cache coalesces identical concurrent misses: one live call, one answer for every waiter.

The live backend here is a small real class that counts its calls and answers only when the test opens its
gate, so a test decides exactly when the one live call ends, fails, or is cancelled. The last test runs the
real Serper backend against the loopback provider server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drgym.document import Document
from drgym.errors import BackendError, BudgetExceededError, DataError
from drgym.ratelimit import TokenBucket
from drgym.search.base import Result
from drgym.search.cache import SearchStore
from drgym.search.metering import Budget, EpisodeView, Meter, MeteredBackend
from drgym.search.replay import ReplayBackend
from drgym.search.serper import SerperBackend
from tests.search.providers_server import KEYS, ProviderServer


class CountingBackend:
    """Counts searches and page reads; each waits for the gate (when there is one) before answering."""

    name = "counting"

    def __init__(self, *, gated: bool = True) -> None:
        self.calls = 0
        self.opens = 0
        self.finished = 0
        self.cancelled = 0
        self.errors: list[BaseException] = []
        """Raised, in order, by the next calls once the gate opens."""
        self.gate = asyncio.Event() if gated else None
        self.started = asyncio.Event()

    async def _wait(self) -> None:
        self.started.set()
        try:
            await self.pause()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.errors:
            raise self.errors.pop(0)
        self.finished += 1

    async def pause(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def search(self, query: str, k: int = 10) -> list[Result]:
        self.calls += 1
        call = self.calls
        await self._wait()
        return [
            Result(f"{query} #{call}.{i}", f"https://e.example/{call}/{i}", "s", {"call": call})
            for i in range(k)
        ]

    async def open(self, url: str) -> Document:
        self.opens += 1
        await self._wait()
        return Document(url, f"page {self.opens}", f"text of {url}")

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SearchStore]:
    st = SearchStore(tmp_path / "cache.sqlite")
    yield st
    st.close()


def hits(meter: Meter, name: str = "counting") -> int:
    return meter.summary()["providers"].get(name, {}).get("cache_hits", 0)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout_s)


# ----------------------------------------------------------------------------- one call for many


async def test_fifty_identical_searches_make_one_live_call(store: SearchStore) -> None:
    inner, meter = CountingBackend(), Meter()
    cache = ReplayBackend(store, strict=False, inner=inner, meter=meter)
    spellings = ["who wrote the logbook", "  who  wrote\tthe logbook ", "who wrote the\nlogbook"]
    tasks = [asyncio.create_task(cache.search(spellings[i % 3], 5)) for i in range(50)]
    await inner.started.wait()
    assert inner.gate is not None
    inner.gate.set()
    answers = await asyncio.gather(*tasks)

    assert inner.calls == 1 and inner.finished == 1
    assert all([r.title for r in a] == [r.title for r in answers[0]] for a in answers)
    assert answers[0][0].title == "who wrote the logbook #1.0"
    assert len({id(a) for a in answers}) == 50, "every caller gets a list of its own"
    assert hits(meter) == 49, "the 49 coalesced searches are cache hits; the first one was a live call"
    assert store.get_search_sync("counting", "who wrote the logbook", 5) is not None
    assert cache._flights == {}

    # Stored now: later identical searches, together or not, are hits and make no call.
    again = await asyncio.gather(*(cache.search("who wrote the logbook", 5) for _ in range(10)))
    assert inner.calls == 1 and hits(meter) == 59
    assert [r.title for r in again[9]] == [r.title for r in answers[0]]


async def test_different_requests_are_not_coalesced(store: SearchStore) -> None:
    inner = CountingBackend()
    cache = ReplayBackend(store, strict=False, inner=inner)
    tasks = [
        asyncio.create_task(cache.search(q, k))
        for q, k in [("alpha", 5), ("alpha", 10), ("Alpha", 5), ("beta", 5), ("alpha", 5)]
    ]
    await until(lambda: inner.calls == 4)
    assert inner.gate is not None
    inner.gate.set()
    answers = await asyncio.gather(*tasks)
    assert inner.calls == 4, "k and case are part of the key; only the last request joined the first"
    assert [len(a) for a in answers] == [5, 10, 5, 5, 5]
    assert answers[4][0].title == answers[0][0].title


async def test_identical_page_reads_make_one_live_call(store: SearchStore) -> None:
    inner = CountingBackend()
    cache = ReplayBackend(store, strict=False, inner=inner)
    spellings = [
        "HTTPS://Example.ORG:443/a/B?x=1#top",
        "https://example.org/a/B?x=1",
        " https://example.org/a/B?x=1 ",
    ]
    tasks = [asyncio.create_task(cache.open(spellings[i % 3])) for i in range(20)]
    await inner.started.wait()
    assert inner.gate is not None
    inner.gate.set()
    documents = await asyncio.gather(*tasks)
    assert inner.opens == 1
    assert {d.title for d in documents} == {"page 1"}
    assert store.get_document_sync("counting", "https://example.org/a/B?x=1") is not None


# ----------------------------------------------------------------------------- errors


async def test_an_error_reaches_every_waiter_and_is_not_cached(store: SearchStore) -> None:
    inner, meter = CountingBackend(), Meter()
    inner.errors.append(BackendError("counting: provider down (HTTP 503)"))
    cache = ReplayBackend(store, strict=False, inner=inner, meter=meter)
    tasks = [asyncio.create_task(cache.search("flaky question", 3)) for _ in range(50)]
    await inner.started.wait()
    assert inner.gate is not None
    inner.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert inner.calls == 1
    assert all(isinstance(o, BackendError) and "HTTP 503" in str(o) for o in outcomes)
    assert hits(meter) == 0, "a failed search is no cache hit"
    assert store.counts_sync()["searches"] == 0, "errors are never cached"
    assert cache._flights == {}

    # The next request asks again, and succeeds.
    results = await cache.search("flaky question", 3)
    assert inner.calls == 2 and results[0].title == "flaky question #2.0"


async def test_a_store_failure_reaches_every_waiter(store: SearchStore) -> None:
    inner = CountingBackend(gated=False)
    cache = ReplayBackend(store, strict=False, inner=inner)
    store.close()
    searches = asyncio.gather(*(cache.search("anything", 3) for _ in range(10)), return_exceptions=True)
    outcomes = await asyncio.wait_for(searches, 5)
    assert all(isinstance(o, DataError) and "is closed" in str(o) for o in outcomes)
    assert inner.calls == 0 and cache._flights == {}


async def test_a_budget_error_belongs_to_the_episode_that_ran_out(store: SearchStore) -> None:
    inner, meter = CountingBackend(gated=False), Meter()
    metered = MeteredBackend(inner, meter, Budget(per_episode=1))
    cache = ReplayBackend(store, strict=False, inner=metered, meter=meter)
    spent, fresh = EpisodeView(cache), EpisodeView(cache)
    await spent.search("warm-up", 3)
    assert spent.usage.calls == 1

    # ``spent`` asks first and leads the flight; its budget error must not end ``fresh``'s search.
    outcomes = await asyncio.gather(
        spent.search("same question", 3), fresh.search("same question", 3), return_exceptions=True
    )
    assert isinstance(outcomes[0], BudgetExceededError)
    assert isinstance(outcomes[1], list) and outcomes[1][0].title == "same question #2.0"
    assert inner.calls == 2 and fresh.usage.calls == 1 and spent.usage.calls == 1


# ----------------------------------------------------------------------------- cancellation


async def test_cancelling_the_first_caller_leaves_the_others_waiting(store: SearchStore) -> None:
    inner = CountingBackend()
    cache = ReplayBackend(store, strict=False, inner=inner)
    first = asyncio.create_task(cache.search("slow question", 4))
    others = [asyncio.create_task(cache.search("slow question", 4)) for _ in range(5)]
    await inner.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert inner.cancelled == 0, "the live call goes on for the callers still waiting"

    assert inner.gate is not None
    inner.gate.set()
    answers = await asyncio.gather(*others)
    assert inner.calls == 1 and inner.finished == 1
    assert {a[0].title for a in answers} == {"slow question #1.0"}
    assert store.get_search_sync("counting", "slow question", 4) is not None


async def test_cancelling_the_first_caller_while_it_looks_up_hands_the_request_over(
    store: SearchStore,
) -> None:
    inner = CountingBackend()
    cache = ReplayBackend(store, strict=False, inner=inner)
    first = asyncio.create_task(cache.search("handed over", 4))
    others = [asyncio.create_task(cache.search("handed over", 4)) for _ in range(5)]
    await asyncio.sleep(0)  # every task has started; the first is still waiting on the store
    assert inner.calls == 0
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(inner.started.wait(), 5)
    assert inner.gate is not None
    inner.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*others), 5)
    assert inner.calls == 1 and {a[0].title for a in answers} == {"handed over #1.0"}
    assert cache._flights == {}


async def test_the_live_call_stops_when_every_caller_is_cancelled(store: SearchStore) -> None:
    inner = CountingBackend()
    cache = ReplayBackend(store, strict=False, inner=inner)
    tasks = [asyncio.create_task(cache.search("abandoned", 2)) for _ in range(3)]
    await inner.started.wait()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    await until(lambda: inner.cancelled == 1)
    assert inner.finished == 0 and cache._flights == {}
    assert store.counts_sync()["searches"] == 0

    # A later request starts afresh.
    assert inner.gate is not None
    inner.gate.set()
    results = await cache.search("abandoned", 2)
    assert inner.calls == 2 and results[0].title == "abandoned #2.0"


# ----------------------------------------------------------------------------- event loops


class BarrierBackend(CountingBackend):
    """Each live call waits until ``parties`` live calls are in progress at once (from any thread)."""

    def __init__(self, parties: int) -> None:
        super().__init__(gated=False)
        self.barrier = threading.Barrier(parties)
        self._count = threading.Lock()

    async def search(self, query: str, k: int = 10) -> list[Result]:
        with self._count:
            self.calls += 1
        await asyncio.to_thread(self.barrier.wait, 5.0)
        return [Result(f"{query} {i}", f"https://e.example/{i}", "s") for i in range(k)]


def test_each_event_loop_has_its_own_flights(tmp_path: Path) -> None:
    # Two loops in two threads ask the same query at once: a flight of one loop cannot be awaited from the
    # other, so each makes its own live call (both in progress together, or the barrier breaks).
    inner = BarrierBackend(parties=2)
    store = SearchStore(tmp_path / "cache.sqlite")
    cache = ReplayBackend(store, strict=False, inner=inner, close_store=True)
    answers: list[list[list[Result]]] = []

    async def ten() -> list[list[Result]]:
        return await asyncio.gather(*(cache.search("shared question", 3) for _ in range(10)))

    threads = [
        threading.Thread(target=lambda: answers.append(asyncio.run(ten())), daemon=True) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 2 and all(len(a) == 10 for a in answers)
    assert inner.calls == 2
    assert cache._flights == {}
    # A third loop, after the others have closed, finds no stale flight and serves the stored answer.
    assert asyncio.run(cache.search("shared question", 3))[0].title == "shared question 0"
    assert inner.calls == 2
    store.close()


# ----------------------------------------------------------------------------- over HTTP


async def test_concurrent_searches_reach_the_provider_once(tmp_path: Path) -> None:
    meter = Meter()
    async with ProviderServer() as server:
        serper = SerperBackend(
            api_key=KEYS["serper"], base_url=server.base_url("serper"), limiter=TokenBucket(1000, 100)
        )
        cache = ReplayBackend(tmp_path / "cache.sqlite", strict=False, inner=serper, meter=meter)
        try:
            answers = await asyncio.gather(*(cache.search("Kellport lighthouse", 5) for _ in range(50)))
        finally:
            await cache.aclose()
        assert len(server.seen("serper")) == 1
    assert all(len(a) == 5 and a[0].url == answers[0][0].url for a in answers)
    assert hits(meter, "serper") == 49
