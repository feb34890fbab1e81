"""Search-API metering and budgets: calls, cache hits, failures and estimated spend per provider.

How the pieces fit (a ``ToolServices`` builds this once per configuration, the env one view per episode)::

    meter, budget = Meter(), Budget(per_episode=30, global_=10_000)
    live = FailoverBackend([MeteredBackend(serper, meter, budget), MeteredBackend(brave, meter, budget)])
    stack = ReplayBackend(store, strict=False, inner=live, ttl_s=DEFAULT_CACHE_TTL_S, meter=meter)
    view = EpisodeView(stack)           # per episode: per-episode counts and budget
    await view.search("query", 10); view.usage.as_dict()

Each call carries its :class:`~drgym.search.episode.Episode` (``search(query, k, episode=ep)``), so one shared
backend stack serves many concurrent episodes without mixing their counts. A call made without an episode is
counted against the wrapper's own default episode (reset by :meth:`MeteredBackend.new_episode`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from drgym.document import Document
from drgym.errors import BackendError, BudgetExceededError, ConfigError
from drgym.search.base import Result, SearchBackend
from drgym.search.episode import (
    Episode,
    EpisodeUsage,
    EpisodeView,
    LimitedUsage,
    SearchLayer,
    open_in,
    search_in,
)

__all__ = [
    "DEFAULT_PRICES_PER_1K",
    "Budget",
    "EpisodeUsage",
    "EpisodeView",
    "LimitedUsage",
    "Meter",
    "MeteredBackend",
    "Priced",
]

DEFAULT_PRICES_PER_1K: dict[str, float] = {
    "serper": 1.00,  # $50 buys 50k credits (smallest top-up); 1 credit per search of up to 10 results
    "brave": 5.00,  # Brave Search API "Search" plan, per 1000 requests
    "tavily": 8.00,  # pay-as-you-go $0.008 per credit; a basic search is 1 credit, an advanced one 2
    "searxng": 0.0,  # self-hosted
    "local": 0.0,
    "miniweb": 0.0,  # the offline mini-web on loopback
}
"""Rough list prices in USD per 1000 calls (late 2025), for *estimates* only; give :class:`Meter` yours."""

@dataclass
class _ProviderStats:
    calls: int = 0
    ok: int = 0
    failures: int = 0
    cache_hits: int = 0
    opens: int = 0
    cost_units: float = 0.0


class Meter:
    """Counts per provider: calls, successes, failures, cache hits, page opens, estimated spend.

    Args:
        prices_per_1k: USD per 1000 successful calls, by provider name, merged over
            :data:`DEFAULT_PRICES_PER_1K`. Unknown providers are counted at $0 and listed as unpriced.
    """

    def __init__(self, prices_per_1k: Mapping[str, float] | None = None) -> None:
        self.prices_per_1k = {**DEFAULT_PRICES_PER_1K, **(prices_per_1k or {})}
        for name, price in self.prices_per_1k.items():
            if not isinstance(price, (int, float)) or price < 0:
                raise ConfigError(f"price per 1000 calls for {name!r} must be a number >= 0, got {price!r}")
        self._stats: dict[str, _ProviderStats] = {}
        self._lock = threading.Lock()

    def _get(self, provider: str) -> _ProviderStats:
        stats = self._stats.get(provider)
        if stats is None:
            stats = self._stats[provider] = _ProviderStats()
        return stats

    def price_per_call(self, provider: str) -> float:
        """Estimated USD for one call of one cost unit."""
        return self.prices_per_1k.get(provider, 0.0) / 1000.0

    def record_call(
        self, provider: str, *, ok: bool, cost_units: float = 1.0, usage: EpisodeUsage | None = None
    ) -> None:
        """Count one provider call; a successful one adds ``cost_units`` times the price to the spend.

        ``usage`` is the episode record to update too, if any.
        """
        spend = self.price_per_call(provider) * cost_units if ok else 0.0
        with self._lock:
            stats = self._get(provider)
            stats.calls += 1
            if ok:
                stats.ok += 1
                stats.cost_units += cost_units
            else:
                stats.failures += 1
        if usage is not None:
            usage.failures += not ok
            usage.est_spend_usd += spend

    def record_cache_hit(self, provider: str, usage: EpisodeUsage | None = None) -> None:
        """Count a query answered from the cache (no provider call, no spend, no budget), for ``usage`` too."""
        with self._lock:
            self._get(provider).cache_hits += 1
        if usage is not None:
            usage.cache_hits += 1

    def record_open(self, provider: str) -> None:
        """Count a page read through a backend (not billed by search providers)."""
        with self._lock:
            self._get(provider).opens += 1

    def summary(self) -> dict[str, Any]:
        """Counts and estimated spend per provider and in total (spend figures are estimates)."""
        with self._lock:
            stats = {name: _ProviderStats(**asdict(value)) for name, value in self._stats.items()}
        providers: dict[str, dict[str, Any]] = {}
        total = {"calls": 0, "ok": 0, "failures": 0, "cache_hits": 0, "opens": 0, "est_spend_usd": 0.0}
        for name in sorted(stats):
            s = stats[name]
            spend = round(s.cost_units * self.price_per_call(name), 6)
            providers[name] = {
                "calls": s.calls,
                "ok": s.ok,
                "failures": s.failures,
                "cache_hits": s.cache_hits,
                "opens": s.opens,
                "est_spend_usd": spend,
                "price_per_1k_usd": self.prices_per_1k.get(name),
            }
            for key in ("calls", "ok", "failures", "cache_hits", "opens"):
                total[key] += providers[name][key]
            total["est_spend_usd"] = round(total["est_spend_usd"] + spend, 6)
        unpriced = sorted(name for name in stats if name not in self.prices_per_1k)
        return {
            "providers": providers,
            "total": total,
            "unpriced": unpriced,
            "note": "spend is an estimate from list prices, not a bill",
        }

    def reset(self) -> None:
        """Forget all counts."""
        with self._lock:
            self._stats.clear()


class Budget:
    """Limits on provider calls: per episode and for the whole process.

    Args:
        per_episode: Calls allowed in one episode (``None`` = no limit).
        global_: Calls allowed over the budget's lifetime (``None`` = no limit).
    """

    def __init__(self, per_episode: int | None = None, global_: int | None = None) -> None:
        for label, value in (("per_episode", per_episode), ("global_", global_)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"Budget.{label} must be None or an integer >= 0, got {value!r}")
        self.per_episode = per_episode
        self.global_ = global_
        self._used = 0
        self._lock = threading.Lock()

    @property
    def global_used(self) -> int:
        """Calls charged so far against the global limit."""
        return self._used

    def charge(self, usage: EpisodeUsage) -> None:
        """Take one call from both limits, or raise without taking anything.

        Raises:
            BudgetExceededError: a limit is spent; the message says which and how to raise it.
        """
        own = usage.call_limit()
        cap = self.per_episode if own is None or (self.per_episode is not None and self.per_episode < own) else own
        with self._lock:
            if cap is not None and usage.calls >= cap:
                raise BudgetExceededError(
                    f"search budget spent: {usage.calls} of {cap} provider calls used in this "
                    f"episode (Budget.per_episode); cached results are still served"
                )
            if self.global_ is not None and self._used >= self.global_:
                raise BudgetExceededError(
                    f"global search budget spent: {self._used} of {self.global_} provider calls used "
                    f"(Budget.global_); raise it or use a cache or replay"
                )
            self._used += 1
            usage.calls += 1

    def refund(self, usage: EpisodeUsage) -> None:
        """Give back a call that never reached the provider."""
        with self._lock:
            self._used = max(0, self._used - 1)
            usage.calls = max(0, usage.calls - 1)


@runtime_checkable
class Priced(Protocol):
    """A provider whose one search costs more than one unit of its price (e.g. Tavily's advanced depth)."""

    @property
    def cost_units(self) -> float:
        """Price units one search costs."""
        ...


class MeteredBackend(SearchLayer):
    """Wraps a backend: every search is charged to the budget and counted by the meter.

    A search that fails with :class:`BackendError` still counts (it may be billed and it did load the
    provider); one refused before reaching the provider (empty query, bad ``k``, cancellation) is refunded.

    Args:
        inner: The provider backend.
        meter: Where counts go (shared by all wrappers of a process).
        budget: Limits to enforce, or ``None``.
    """

    def __init__(self, inner: SearchBackend, meter: Meter, budget: Budget | None = None) -> None:
        self.inner = inner
        self.meter = meter
        self.budget = budget or Budget()
        self.name = inner.name
        self._default_usage = EpisodeUsage()
        self._cost_units = float(inner.cost_units) if isinstance(inner, Priced) else 1.0

    @property
    def usage(self) -> EpisodeUsage:
        """Counts of calls made outside any episode view since the last :meth:`new_episode`."""
        return self._default_usage

    def new_episode(self) -> None:
        """Start a new default episode (for callers that use no :class:`EpisodeView`)."""
        self._default_usage = EpisodeUsage()

    def below(self) -> list[SearchBackend]:
        return [self.inner]

    async def search(self, query: str, k: int = 10, *, episode: Episode | None = None) -> list[Result]:
        """Charge ``episode``'s budget (default: this wrapper's own), then search the provider."""
        usage = episode.usage if episode is not None else self._default_usage
        self.budget.charge(usage)
        cost_units = self._cost_units
        try:
            results = await search_in(self.inner, query, k, episode)
        except BackendError:
            self.meter.record_call(self.name, ok=False, usage=usage)
            raise
        except BaseException:
            self.budget.refund(usage)
            raise
        self.meter.record_call(self.name, ok=True, cost_units=cost_units, usage=usage)
        return results

    async def open(self, url: str, *, episode: Episode | None = None) -> Document:
        """Read a page through the inner backend (counted, not charged)."""
        self.meter.record_open(self.name)
        return await open_in(self.inner, url, episode)

    async def aclose(self) -> None:
        """Close the inner backend."""
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"MeteredBackend({self.inner!r})"
