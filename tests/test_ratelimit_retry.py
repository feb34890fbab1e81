from __future__ import annotations

import asyncio
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from drgym.errors import BackendError, ConfigError, RateLimitedError
from drgym.ratelimit import KeyedRateLimiter, TokenBucket
from drgym.retry import Retryable, RetryPolicy, parse_retry_after, with_retries
from drgym.services import ToolServices

SLACK = 0.02  # timer granularity; only used for lower bounds


# ----------------------------------------------------------------------------- TokenBucket


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf")])
def test_bucket_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(ConfigError, match="rate must be a positive number"):
        TokenBucket(rate)


def test_bucket_rejects_bad_burst() -> None:
    with pytest.raises(ConfigError, match="burst must be a number >= 1"):
        TokenBucket(10, burst=0.5)


def test_bucket_default_burst_is_one_second_of_tokens() -> None:
    assert TokenBucket(20).burst == 20
    assert TokenBucket(0.5).burst == 1


async def test_bucket_rate_bounds_throughput() -> None:
    rate, burst, n = 200.0, 5, 25
    bucket = TokenBucket(rate, burst)
    start = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(n)))
    elapsed = time.monotonic() - start
    assert elapsed >= (n - burst) / rate - SLACK
    assert elapsed < 5.0  # bounded: no stall


async def test_bucket_burst_is_immediate() -> None:
    bucket = TokenBucket(1.0, burst=3)
    waits = [await bucket.acquire() for _ in range(3)]
    assert waits == [0.0, 0.0, 0.0]
    assert not bucket.try_acquire()


async def test_bucket_serves_waiters_in_call_order() -> None:
    bucket = TokenBucket(500.0, burst=1)
    order: list[int] = []

    async def waiter(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(12)]
    await asyncio.gather(*tasks)
    assert order == list(range(12))


async def test_bucket_max_wait_refuses_without_reserving() -> None:
    bucket = TokenBucket(10.0, burst=1)
    await bucket.acquire()
    with pytest.raises(
        RateLimitedError, match=r"would delay this request by 0\.\d+ s, more than the 0\.01 s"
    ):
        await bucket.acquire(max_wait=0.01)
    # Nothing was reserved: the next request waits one token's time, not two.
    assert await bucket.acquire() == pytest.approx(0.1, abs=0.03)


async def test_cancelled_waiter_gives_tokens_back() -> None:
    bucket = TokenBucket(10.0, burst=1)
    await bucket.acquire()
    task = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await bucket.acquire() == pytest.approx(0.1, abs=0.03)


def test_bucket_rejects_negative_tokens() -> None:
    with pytest.raises(ConfigError, match="tokens must be a non-negative number"):
        asyncio.run(TokenBucket(1.0).acquire(-1))


def test_bucket_works_across_event_loops_and_threads() -> None:
    bucket = TokenBucket(20.0, burst=2)  # made outside any loop
    asyncio.run(bucket.acquire())
    asyncio.run(bucket.acquire())
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        waits = sorted(pool.map(lambda _: asyncio.run(bucket.acquire()), range(4), timeout=5))
    # The burst is spent: the four threads queue one behind another, 1/20 s apart.
    assert waits == pytest.approx([0.05, 0.10, 0.15, 0.20], abs=0.03)
    assert time.monotonic() - start >= 0.2 - 0.03


async def test_configure_changes_rate() -> None:
    bucket = TokenBucket(1.0, burst=1)
    bucket.configure(1000.0, burst=1)
    await bucket.acquire()
    assert await bucket.acquire() < 0.01


# ----------------------------------------------------------------------------- KeyedRateLimiter


async def test_keyed_limiter_separates_keys() -> None:
    limiter = KeyedRateLimiter(1.0, burst=1)
    assert await limiter.acquire("a.example") == 0.0
    assert await limiter.acquire("b.example") == 0.0  # another key: not delayed
    with pytest.raises(RateLimitedError):
        await limiter.acquire("a.example", max_wait=0.05)  # same key: would wait ~1 s


async def test_keyed_limiter_memory_is_bounded() -> None:
    limiter = KeyedRateLimiter(1000.0, burst=1, max_keys=3)
    for i in range(50):
        await limiter.acquire(f"host{i}")
    assert len(limiter) <= 3
    assert limiter.bucket("host49") is limiter.bucket("host49")


def test_keyed_limiter_validates() -> None:
    with pytest.raises(ConfigError, match="max_keys must be >= 1"):
        KeyedRateLimiter(1.0, max_keys=0)
    with pytest.raises(ConfigError, match="rate must be a positive number"):
        KeyedRateLimiter(0)


# ----------------------------------------------------------------------------- limiters shared by name


def test_services_hold_one_limiter_per_name_and_two_services_share_none() -> None:
    with ToolServices() as services, ToolServices() as other:
        a = services.limiter("test:provider", 5.0)
        assert services.limiter("test:provider", 5.0) is a
        assert services.limiter("test:other", 5.0) is not a
        assert other.limiter("test:provider", 5.0) is not a
        b = services.limiter("test:provider", 2.0, burst=4)  # latest configuration wins, same object
        assert b is a and (a.rate, a.burst) == (2.0, 4.0)
        with pytest.raises(ConfigError, match="rate must be a positive number"):
            services.limiter("test:provider", 0)


# ----------------------------------------------------------------------------- RetryPolicy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"base_delay": -1.0}, "base_delay must be a finite number >= 0"),
        ({"max_total_s": float("inf")}, "max_total_s must be a finite number >= 0"),
        ({"jitter": 1.5}, "jitter must be a fraction between 0 and 1"),
    ],
)
def test_policy_validates(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RetryPolicy(**kwargs)


def test_delays_follow_exponential_backoff_with_seeded_jitter() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, jitter=0.5, rng=random.Random(7))
    delays = [policy.delay(n) for n in range(1, 8)]
    draws = random.Random(7)
    expected = [min(8.0, 0.5 * 2 ** (n - 1)) * (1 - 0.5 * draws.random()) for n in range(1, 8)]
    assert delays == pytest.approx(expected)
    for n, d in enumerate(delays, start=1):
        ceiling = min(8.0, 0.5 * 2 ** (n - 1))
        assert ceiling * 0.5 <= d <= ceiling
    again = RetryPolicy(base_delay=0.5, max_delay=8.0, jitter=0.5, rng=random.Random(7))
    assert [again.delay(n) for n in range(1, 8)] == delays


def test_no_jitter_gives_exact_backoff() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert policy.delay(5000) == 1.0  # no overflow for absurd attempt numbers


def test_retry_after_is_a_floor_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=2.0, jitter=0.0)
    assert policy.delay(1, retry_after=1.5) == 1.5
    assert policy.delay(1, retry_after=0.0) == pytest.approx(0.1)
    assert policy.delay(1, retry_after=50.0) == 2.0


def test_decide_gives_up_on_retry_after_beyond_max_delay() -> None:
    policy = RetryPolicy(max_delay=2.0)
    decision = policy.decide(1, elapsed=0.0, retry_after=60.0)
    assert not decision.retry
    assert "asked to retry after 60 s (Retry-After)" in decision.reason


def test_decide_respects_attempts_and_total_budget() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=1.0, max_total_s=5.0, jitter=0.0)
    assert policy.decide(1, elapsed=0.0).retry
    assert policy.decide(2, elapsed=0.0).delay == 1.0
    assert "no attempts left (max_attempts=3)" in policy.decide(3, elapsed=0.0).reason
    late = policy.decide(1, elapsed=4.5)
    assert not late.retry and "total retry budget (max_total_s=5 s" in late.reason


def test_never_policy_makes_one_attempt() -> None:
    assert not RetryPolicy.never().decide(1, 0.0).retry


def test_retry_statuses() -> None:
    policy = RetryPolicy()
    assert all(policy.is_retryable_status(s) for s in (429, 500, 502, 503, 504))
    assert not any(policy.is_retryable_status(s) for s in (400, 401, 403, 404, 422))


# ----------------------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e9", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0


# ----------------------------------------------------------------------------- with_retries


FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01, max_total_s=2.0, rng=random.Random(0))


async def test_with_retries_succeeds_after_failures() -> None:
    calls: list[tuple[int, float]] = []

    async def attempt(n: int, remaining: float) -> str:
        calls.append((n, remaining))
        if n < 3:
            raise Retryable("HTTP 503")
        return "ok"

    assert await with_retries(attempt, FAST, what="demo") == "ok"
    assert [n for n, _ in calls] == [1, 2, 3]
    assert all(0 < remaining <= 2.0 for _, remaining in calls)


async def test_with_retries_gives_up_with_typed_errors() -> None:
    count = 0

    async def rate_limited(n: int, remaining: float) -> None:
        nonlocal count
        count += 1
        raise Retryable("HTTP 429", rate_limited=True)

    with pytest.raises(
        RateLimitedError, match=r"demo failed: HTTP 429; no attempts left \(max_attempts=4\); 4 attempts"
    ):
        await with_retries(rate_limited, FAST, what="demo")
    assert count == 4

    async def broken(n: int, remaining: float) -> None:
        raise Retryable("HTTP 502")

    with pytest.raises(BackendError, match="demo failed: HTTP 502") as info:
        await with_retries(broken, FAST, what="demo")
    assert not isinstance(info.value, RateLimitedError)


async def test_with_retries_does_not_retry_other_errors() -> None:
    count = 0

    async def attempt(n: int, remaining: float) -> None:
        nonlocal count
        count += 1
        raise BackendError("HTTP 401")

    with pytest.raises(BackendError, match="HTTP 401"):
        await with_retries(attempt, FAST, what="demo")
    assert count == 1


async def test_with_retries_total_time_is_bounded() -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=0.02, max_delay=0.02, max_total_s=0.1, jitter=0.0)

    async def attempt(n: int, remaining: float) -> None:
        raise Retryable("HTTP 500")

    start = time.monotonic()
    with pytest.raises(BackendError, match="total retry budget"):
        await with_retries(attempt, policy, what="demo")
    assert time.monotonic() - start < 1.0


async def test_with_retries_custom_give_up() -> None:
    async def attempt(n: int, remaining: float) -> None:
        raise Retryable("reset by peer")

    class PageError(Exception):
        pass

    with pytest.raises(PageError, match="page fetch failed: reset by peer"):
        await with_retries(
            attempt, RetryPolicy.never(), what="page fetch", give_up=lambda m, last: PageError(m)
        )
