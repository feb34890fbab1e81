"""The gateway's ``/metrics``: Prometheus text format from ``prometheus_client``, one registry per gateway.

Request counts, latencies and errors are counted as requests pass; provider calls, cache hits, spend, budget
and rate-limit waits are read from the objects that own them (meter, budget, token bucket) at scrape time,
so there is one source for each figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from drgym.errors import missing_dependency

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - the [serve] extra installs it
    raise missing_dependency("prometheus-client", "serve") from exc

if TYPE_CHECKING:
    from drgym.gateway.services import GatewayServices

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """Counters of one gateway, in a registry of its own (no process-wide default registry)."""

    def __init__(self, services: GatewayServices) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "drgym_gateway_requests", "Requests served, by endpoint and outcome",
            ["endpoint", "outcome"], registry=self.registry,
        )
        self.errors = Counter(
            "drgym_gateway_errors", "Errors, by kind (the drgym error class, or the HTTP refusal)",
            ["kind"], registry=self.registry,
        )
        self.latency = Histogram(
            "drgym_gateway_request_seconds", "Time to answer a tool request, by endpoint", ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=self.registry,
        )
        self.in_flight = Gauge("drgym_gateway_in_flight", "Tool requests received and not yet answered (queued ones included)", registry=self.registry)
        self.queued = Gauge(
            "drgym_gateway_queued", "Tool requests waiting for a turn (past --max-in-flight), by lane",
            ["lane"], registry=self.registry
        )
        self.queue_wait = Histogram(
            "drgym_gateway_queue_wait_seconds", "Time a tool request waited for a turn before its work started, by lane",
            ["lane"],
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=self.registry,
        )
        self.loop_lag = Histogram(
            "drgym_gateway_loop_lag_seconds",
            "How late the event loop woke for a timer: time the loop was busy with other work (CPU on the loop)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "drgym_gateway_loop_lag_max_seconds", "Longest event-loop lag seen", registry=self.registry
        )
        self.registry.register(_OwnedFigures(services))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _OwnedFigures:
    """Reads meter, budget and limiter at scrape time."""

    def __init__(self, services: GatewayServices) -> None:
        self._services = services

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        services = self._services
        summary = services.meter.summary()["providers"]
        families = {
            "calls": CounterMetricFamily("drgym_gateway_upstream_calls", "Provider calls", labels=["provider"]),
            "failures": CounterMetricFamily(
                "drgym_gateway_upstream_failures", "Provider calls that failed", labels=["provider"]
            ),
            "cache_hits": CounterMetricFamily(
                "drgym_gateway_cache_hits", "Searches answered from the store or a coalesced call",
                labels=["provider"],
            ),
            "opens": CounterMetricFamily("drgym_gateway_page_opens", "Pages opened", labels=["provider"]),
            "est_spend_usd": CounterMetricFamily(
                "drgym_gateway_spend_usd", "Estimated spend from list prices", labels=["provider"]
            ),
        }
        for provider, stats in summary.items():
            for key, family in families.items():
                family.add_metric([provider], float(stats[key]))
        yield from families.values()
        budget = services.budget
        used = GaugeMetricFamily("drgym_gateway_budget_used", "Provider calls charged to the global budget")
        used.add_metric([], float(budget.global_used))
        yield used
        if budget.global_ is not None:
            limit = GaugeMetricFamily("drgym_gateway_budget_limit", "The global budget of provider calls")
            limit.add_metric([], float(budget.global_))
            yield limit
        limiter = services.limiter
        waits = CounterMetricFamily("drgym_gateway_rate_limit_waits", "Upstream requests that waited for the bucket")
        waited = CounterMetricFamily(
            "drgym_gateway_rate_limit_wait_seconds", "Seconds upstream requests waited for the bucket"
        )
        waits.add_metric([], float(limiter.waits if limiter is not None else 0))
        waited.add_metric([], float(limiter.waited_s if limiter is not None else 0.0))
        yield waits
        yield waited
