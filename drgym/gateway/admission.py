"""Admission control of the gateway: a bounded number of tool requests at work, a bounded FIFO queue before them.

Why: with thousands of episodes, letting every request start at once makes all of them slow together (each
page's read budget starts when its work starts, and thousands of reads sharing one CPU all pass it: at 4,096
episodes 65% of the page reads timed out that way). Requests past ``max_in_flight`` wait their turn instead,
and their work (and its time budgets) starts when the turn comes. A queue that is full answers
HTTP 503 with ``Retry-After`` (how long the queue ahead takes to drain at the recent pace), which clients
honour: a busy gateway says so instead of timing clients out.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from drgym.errors import ConfigError

__all__ = ["Admission", "GatewayBusy"]

_RATE_HALF_LIFE_S = 5.0


class GatewayBusy(Exception):
    """The queue is full: answer 503 with ``Retry-After: retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"the gateway is at capacity; retry after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


class Admission:
    """At most ``max_in_flight`` requests at work; at most ``max_queue`` more waiting, first come first served.

    Args:
        max_in_flight: Tool requests worked on at once.
        max_queue: Requests that may wait for a turn; one more is refused with :class:`GatewayBusy`.
        min_retry_after_s / max_retry_after_s: Bounds of the ``Retry-After`` a refusal asks for.
    """

    def __init__(
        self,
        max_in_flight: int = 256,
        max_queue: int = 8192,
        *,
        min_retry_after_s: float = 1.0,
        max_retry_after_s: float = 30.0,
    ) -> None:
        for name, value, low in (("max_in_flight", max_in_flight, 1), ("max_queue", max_queue, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"gateway {name} must be an integer >= {low}, got {value!r}")
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.min_retry_after_s = min_retry_after_s
        self.max_retry_after_s = max_retry_after_s
        self.in_flight = 0
        self.waiting = 0
        self.refused = 0
        self.queued_s = 0.0
        """Seconds requests spent waiting for a turn, all together."""
        self._slots: asyncio.Semaphore | None = None
        self._rate = 0.0  # completions per second, exponentially weighted
        self._rate_at = time.monotonic()

    def retry_after_s(self) -> float:
        """How long the requests ahead take to drain at the recent pace, within the bounds."""
        rate = self._current_rate()
        ahead = self.waiting + self.in_flight
        wait = ahead / rate if rate > 0 else self.max_retry_after_s
        return float(min(self.max_retry_after_s, max(self.min_retry_after_s, math.ceil(wait))))

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[float]:
        """Wait for a turn (yields the seconds waited); raises :class:`GatewayBusy` when the queue is full."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if self.in_flight >= self.max_in_flight and self.waiting >= self.max_queue:
            self.refused += 1
            raise GatewayBusy(self.retry_after_s())
        started = time.monotonic()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        waited = time.monotonic() - started
        self.queued_s += waited
        self.in_flight += 1
        try:
            yield waited
        finally:
            self.in_flight -= 1
            self._slots.release()
            self._completed()

    def _current_rate(self) -> float:
        now = time.monotonic()
        decay = 0.5 ** ((now - self._rate_at) / _RATE_HALF_LIFE_S)
        self._rate *= decay
        self._rate_at = now
        return self._rate / _RATE_HALF_LIFE_S * math.log(2)

    def _completed(self) -> None:
        self._current_rate()
        self._rate += 1.0
