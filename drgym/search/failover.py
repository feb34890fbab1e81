"""Try search backends in order: when one fails (after its own retries), the next one answers.

Only :class:`BackendError` (HTTP errors, timeouts, 429s past the retry budget, bad JSON) moves on to the next
backend. A spent budget is not a provider fault and propagates at once, as do page errors from ``open``.

A backend that just failed is tried last for ``cooldown_s`` seconds, so an outage costs one retry budget, not
one per search; when every backend is cooling down they are all tried anyway, in the configured order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence

from drgym.document import Document
from drgym.errors import BackendError, ConfigError, RateLimitedError
from drgym.search.base import Result, SearchBackend
from drgym.search.episode import Episode, SearchLayer, open_in, search_in

__all__ = ["FailoverBackend"]

logger = logging.getLogger(__name__)


class FailoverBackend(SearchLayer):
    """Search with the first backend that answers.

    Args:
        backends: Backends in order of preference (at least one).
        name: Defaults to the backends' names joined by ``+`` (e.g. ``"serper+brave"``).
        cooldown_s: How long a failed backend is moved to the back of the line (0 disables).

    Attributes:
        served: Searches answered, by backend name.
        failures: Failures seen, by backend name.
        last_served: Name of the backend that answered the most recent search.
    """

    def __init__(
        self, backends: Sequence[SearchBackend], *, name: str | None = None, cooldown_s: float = 30.0
    ) -> None:
        if not backends:
            raise ConfigError("FailoverBackend needs at least one backend")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ConfigError(f"FailoverBackend backends need distinct names, got {names}")
        if cooldown_s < 0:
            raise ConfigError(f"cooldown_s must be >= 0, got {cooldown_s!r}")
        self.backends = list(backends)
        self.name = name or "+".join(names)
        self.cooldown_s = cooldown_s
        self.served: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.last_served: str | None = None
        self._down_until: dict[str, float] = {}

    def _order(self) -> list[SearchBackend]:
        now = time.monotonic()
        healthy = [b for b in self.backends if self._down_until.get(b.name, 0.0) <= now]
        return healthy + [b for b in self.backends if b not in healthy]

    def _failed(self, backend: SearchBackend, exc: BaseException) -> None:
        self.failures[backend.name] += 1
        if self.cooldown_s:
            self._down_until[backend.name] = time.monotonic() + self.cooldown_s
        logger.warning("search backend %s failed, trying the next one: %s", backend.name, exc)

    def _all_failed(self, what: str, errors: list[tuple[str, BackendError]]) -> BackendError:
        detail = "; ".join(f"{name}: {exc}" for name, exc in errors)
        cls = (
            RateLimitedError if all(isinstance(exc, RateLimitedError) for _, exc in errors) else BackendError
        )
        return cls(f"every search backend failed to {what} ({detail})")

    def below(self) -> list[SearchBackend]:
        return list(self.backends)

    async def search(self, query: str, k: int = 10, *, episode: Episode | None = None) -> list[Result]:
        """Results from the first backend that answers; each result's ``extras["provider"]`` says which."""
        errors: list[tuple[str, BackendError]] = []
        for backend in self._order():
            try:
                results = await search_in(backend, query, k, episode)
            except BackendError as exc:
                self._failed(backend, exc)
                errors.append((backend.name, exc))
                continue
            self._down_until.pop(backend.name, None)
            self.served[backend.name] += 1
            self.last_served = backend.name
            return [
                r
                if "provider" in r.extras
                else Result(r.title, r.url, r.snippet, {**r.extras, "provider": backend.name})
                for r in results
            ]
        raise self._all_failed("search", errors)

    async def open(self, url: str, *, episode: Episode | None = None) -> Document:
        """The page from the first backend whose page reader works (page errors propagate)."""
        errors: list[tuple[str, BackendError]] = []
        for backend in self._order():
            try:
                return await open_in(backend, url, episode)
            except BackendError as exc:
                errors.append((backend.name, exc))
        raise self._all_failed("open the page", errors)

    async def aclose(self) -> None:
        """Close every backend, even when one of them fails to close."""
        outcomes = await asyncio.gather(*(b.aclose() for b in self.backends), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
