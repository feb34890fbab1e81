"""Token-bucket rate limiting for search providers and web hosts.

The bucket is *reservation based*: each ``acquire`` takes its tokens at once (the level may go below zero,
which is a debt) and then sleeps until the debt it joined is paid. Because a reservation is made without
awaiting, waiters are served strictly in call order (no thundering herd, no starvation), and the only state
is two floats behind a ``threading.Lock``. Nothing is bound to an event loop, so one bucket can be shared by
every episode that is given it, whether they run on the caller's loop or on a private one. Buckets shared by
name live in a :class:`~drgym.services.ToolServices` (``services.limiter("search:serper", rate)``), not here.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict

from drgym.errors import ConfigError, RateLimitedError

__all__ = ["KeyedRateLimiter", "TokenBucket"]

def _check_rate(rate: float, burst: float | None) -> tuple[float, float]:
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"rate must be a positive number of tokens per second, got {rate!r}")
    if burst is None:
        burst = max(1.0, float(rate))
    if not isinstance(burst, (int, float)) or not math.isfinite(burst) or burst < 1:
        raise ConfigError(f"burst must be a number >= 1 (tokens the bucket holds), got {burst!r}")
    return float(rate), float(burst)


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens per second, holding at most ``burst`` tokens.

    Args:
        rate: Tokens added per second (requests per second when each request takes one token).
        burst: Capacity, i.e. how many requests may go at once after a quiet spell. Defaults to
            ``max(1, rate)`` (one second's worth).

    Raises:
        ConfigError: ``rate <= 0`` or ``burst < 1``.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._rate, self._burst = _check_rate(rate, burst)
        self._level = self._burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self.waits = 0
        """Acquisitions that had to wait (for metrics)."""
        self.waited_s = 0.0
        """Seconds of waiting reserved so far, all callers together (for metrics)."""

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The bucket's capacity."""
        return self._burst

    def configure(self, rate: float, burst: float | None = None) -> None:
        """Change rate and capacity in place; waiters already queued keep their reservations."""
        rate, burst = _check_rate(rate, burst)
        with self._lock:
            self._refill(time.monotonic())
            self._rate, self._burst = rate, burst
            self._level = min(self._level, burst)

    def _refill(self, now: float) -> None:
        # Called with the lock held.
        self._level = min(self._burst, self._level + (now - self._stamp) * self._rate)
        self._stamp = now

    def _reserve(self, tokens: float, max_wait: float | None) -> float:
        """Take ``tokens`` now and return how long the caller must wait before using them."""
        with self._lock:
            self._refill(time.monotonic())
            wait = max(0.0, (tokens - self._level) / self._rate)
            if max_wait is not None and wait > max_wait:
                raise RateLimitedError(
                    f"rate limit of {self._rate:g}/s would delay this request by {wait:.2f} s, "
                    f"more than the {max_wait:g} s allowed"
                )
            self._level -= tokens
            if wait > 0:
                self.waits += 1
                self.waited_s += wait
            return wait

    def _refund(self, tokens: float) -> None:
        with self._lock:
            self._refill(time.monotonic())
            self._level = min(self._burst, self._level + tokens)

    def is_full(self) -> bool:
        """True when the bucket holds its full capacity (nobody has used it for a while)."""
        with self._lock:
            self._refill(time.monotonic())
            return self._level >= self._burst

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are available right now, without waiting."""
        with self._lock:
            self._refill(time.monotonic())
            if self._level >= tokens:
                self._level -= tokens
                return True
            return False

    async def acquire(self, tokens: float = 1.0, *, max_wait: float | None = None) -> float:
        """Wait until ``tokens`` may be spent; return the seconds waited.

        Args:
            tokens: How many tokens this request costs (may exceed ``burst``: it then waits for the debt).
            max_wait: If the wait would exceed this many seconds, raise at once instead of queueing.

        Raises:
            ConfigError: ``tokens`` is negative or not finite.
            RateLimitedError: the wait would exceed ``max_wait`` (nothing is reserved then).
        """
        if not isinstance(tokens, (int, float)) or not math.isfinite(tokens) or tokens < 0:
            raise ConfigError(f"tokens must be a non-negative number, got {tokens!r}")
        if tokens == 0:
            return 0.0
        wait = self._reserve(float(tokens), max_wait)
        if wait <= 0:
            return 0.0
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            # A cancelled waiter gives its tokens back, so it does not slow down the ones behind it.
            self._refund(float(tokens))
            raise
        return wait

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self._rate:g}, burst={self._burst:g})"


class KeyedRateLimiter:
    """One :class:`TokenBucket` per key (e.g. per host), made on first use.

    Buckets that have refilled completely carry no state worth keeping, so when more than ``max_keys`` exist
    the least recently used full ones are dropped: memory stays bounded however many hosts a crawl touches.
    """

    def __init__(self, rate: float, burst: float | None = None, *, max_keys: int = 10_000) -> None:
        self._rate, self._burst = _check_rate(rate, burst)
        if max_keys < 1:
            raise ConfigError(f"max_keys must be >= 1, got {max_keys!r}")
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def bucket(self, key: str) -> TokenBucket:
        """The bucket for ``key``, created if needed."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self._rate, self._burst)
                self._buckets[key] = bucket
                self._evict()
            else:
                self._buckets.move_to_end(key)
            return bucket

    def _evict(self) -> None:
        # Called with the lock held. Idle (full) buckets go first, oldest first; if every bucket is busy the
        # oldest go anyway, since bounded memory matters more than a brief extra burst on a forgotten key.
        excess = len(self._buckets) - self._max_keys
        if excess <= 0:
            return
        newest = next(reversed(self._buckets))
        for key in [k for k in self._buckets if k != newest and self._buckets[k].is_full()][:excess]:
            del self._buckets[key]
            excess -= 1
        while excess > 0:
            self._buckets.popitem(last=False)
            excess -= 1

    def __len__(self) -> int:
        return len(self._buckets)

    async def acquire(self, key: str, tokens: float = 1.0, *, max_wait: float | None = None) -> float:
        """Wait for ``tokens`` from ``key``'s bucket; see :meth:`TokenBucket.acquire`."""
        return await self.bucket(key).acquire(tokens, max_wait=max_wait)
