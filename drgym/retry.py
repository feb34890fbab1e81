"""A small, bounded retry policy: exponential backoff with jitter, ``Retry-After`` honoured, hard limits.

Every retry loop in drgym is bounded three ways: a number of attempts, a cap on any single wait, and a total
time budget. A server that asks (via ``Retry-After``) for a longer wait than those limits allow is not waited
for at all: the call gives up at once with an error that says so, instead of stalling a whole turn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from drgym.errors import BackendError, ConfigError, RateLimitedError

__all__ = ["RetryDecision", "RetryPolicy", "Retryable", "parse_retry_after", "with_retries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SECONDS = re.compile(r"\d+(\.\d+)?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None`` when absent or unreadable.

    Accepts delta-seconds (``"120"``, also ``"1.5"``) and HTTP-dates (``"Wed, 21 Oct 2015 07:28:00 GMT"``);
    a date in the past gives ``0.0``.

    Args:
        value: The header value.
        now: The current time for HTTP-dates (tests); defaults to the clock.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryDecision:
    """What the policy says after a failed attempt: wait ``delay`` seconds and retry, or stop (``reason``)."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter.

    The wait after the ``n``-th failed attempt is ``min(max_delay, base_delay * 2**(n-1))`` shrunk by a random
    fraction of at most ``jitter`` (so waits of many clients spread out instead of colliding), and never less
    than the server's ``Retry-After``.
    """

    max_attempts: int = 4
    """Attempts in all, the first included (1 = never retry)."""
    base_delay: float = 0.5
    """Wait after the first failure, seconds (before jitter)."""
    max_delay: float = 8.0
    """Longest single wait, seconds. A ``Retry-After`` beyond it means: give up now."""
    max_total_s: float = 30.0
    """Budget for all attempts and waits together, seconds."""
    jitter: float = 0.5
    """Fraction (0..1) by which a wait may be randomly shortened."""
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    """HTTP statuses worth another try; any other error status fails at once."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    """Source of jitter; pass ``random.Random(seed)`` for reproducible waits."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("base_delay", "max_delay", "max_total_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"RetryPolicy.jitter must be a fraction between 0 and 1, got {self.jitter!r}")
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that makes one attempt only."""
        return cls(max_attempts=1)

    def is_retryable_status(self, status: int) -> bool:
        """Whether an HTTP status is worth another attempt."""
        return status in self.retry_statuses

    def backoff(self, attempt: int) -> float:
        """The un-jittered wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ConfigError(f"attempt numbers start at 1, got {attempt!r}")
        # Cap the exponent: 2**1024 overflows a float long before any sane max_delay matters.
        return min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 60))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Jittered exponential backoff, at least ``retry_after`` when the server sent one, and never more than
        ``max_delay``. Whether to retry at all (a ``Retry-After`` beyond ``max_delay`` means no) is
        :meth:`decide`'s call.
        """
        wait = self.backoff(attempt) * (1.0 - self.jitter * self.rng.random())
        if retry_after is not None and retry_after > 0:
            wait = max(wait, retry_after)
        return min(wait, self.max_delay)

    def decide(self, attempt: int, elapsed: float, retry_after: float | None = None) -> RetryDecision:
        """Whether to retry after failed attempt ``attempt``, ``elapsed`` seconds after the first began."""
        if attempt >= self.max_attempts:
            return RetryDecision(False, reason=f"no attempts left (max_attempts={self.max_attempts})")
        if retry_after is not None and retry_after > self.max_delay:
            return RetryDecision(
                False,
                reason=f"the server asked to retry after {retry_after:g} s (Retry-After), longer than the "
                f"longest wait allowed (max_delay={self.max_delay:g} s), so not waiting",
            )
        wait = self.delay(attempt, retry_after)
        if elapsed + wait > self.max_total_s:
            return RetryDecision(
                False,
                reason=f"another attempt after {wait:.2f} s would pass the total retry budget "
                f"(max_total_s={self.max_total_s:g} s, {elapsed:.2f} s spent)",
            )
        return RetryDecision(True, delay=wait)


class Retryable(Exception):
    """Raised by one attempt inside :func:`with_retries` to ask for another try.

    Args:
        message: What went wrong (no secrets: it ends up in the final error).
        retry_after: The server's ``Retry-After`` in seconds, if it sent one.
        rate_limited: True for HTTP 429, so the final error is a ``RateLimitedError``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


def _default_give_up(message: str, last: Retryable) -> Exception:
    return RateLimitedError(message) if last.rate_limited else BackendError(message)


async def with_retries(
    attempt: Callable[[int, float], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    give_up: Callable[[str, Retryable], Exception] = _default_give_up,
) -> T:
    """Run ``attempt`` until it returns, retrying while it raises :class:`Retryable` and the policy agrees.

    Args:
        attempt: ``attempt(number, remaining_s)``; ``number`` starts at 1, ``remaining_s`` is what is left of
            ``policy.max_total_s`` (use it to shorten the attempt's own timeout). Any exception other than
            ``Retryable`` propagates at once.
        policy: The retry policy.
        what: Names the operation in messages, e.g. ``"serper search"``.
        give_up: Builds the exception raised when the policy stops; defaults to ``RateLimitedError`` after a
            429, else ``BackendError``.
    """
    start = time.monotonic()
    number = 1
    while True:
        remaining = max(0.0, policy.max_total_s - (time.monotonic() - start))
        try:
            return await attempt(number, remaining)
        except Retryable as exc:
            elapsed = time.monotonic() - start
            decision = policy.decide(number, elapsed, exc.retry_after)
            if not decision.retry:
                raise give_up(
                    f"{what} failed: {exc}; {decision.reason}; {number} attempt{'s' * (number > 1)} "
                    f"in {elapsed:.1f} s",
                    exc,
                ) from exc
            logger.info(
                "%s: %s; retry %d of %d in %.2f s", what, exc, number, policy.max_attempts - 1, decision.delay
            )
            await asyncio.sleep(decision.delay)
            number += 1
