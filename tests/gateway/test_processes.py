"""Several client processes (multiprocessing, and a local Ray cluster) against one ``drgym serve`` process.

The upstream is a counting SearxNG-schema server on loopback: what reaches it is what a provider would bill.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import time

import pytest

from tests.gateway import workers
from tests.gateway.upstream import Upstream, gateway, start_gateway, stop, stored

pytestmark = pytest.mark.slow


def _searxng_args(upstream: Upstream, *extra: str) -> list[str]:
    options = json.dumps({"base_url": upstream.url, "language": None})
    return ["--search", "searxng", "--search-kwargs", options, *extra]


@pytest.fixture(scope="module")
def pool():
    """Three client processes, started once for the module (starting Python with drgym costs seconds)."""
    with mp.get_context("spawn").Pool(3) as workers_pool:
        yield workers_pool


def test_the_rate_limit_holds_across_processes(upstream, pool) -> None:
    rps = 20.0
    with gateway(*_searxng_args(upstream, "--rps", str(rps), "--burst", "1")) as gw:
        jobs = [[f"p{p} q{i}" for i in range(12)] for p in range(3)]
        outcomes = pool.starmap(workers.search_many, [(gw.url, queries) for queries in jobs])
    assert all(o == "ok" for batch in outcomes for _, o in batch)
    times = sorted(upstream.times())
    assert len(times) == 36
    # A bucket of rate r and burst b sends at most b + r requests in any one-second window (how providers
    # count). Arrival times also carry the trip (a new connection can delay one request into the next
    # window), so one request of jitter is allowed; the median gap shows the pacing itself.
    for start in times:
        in_window = sum(1 for t in times if start <= t < start + 1.0)
        assert in_window <= 1 + rps + 1, (start, in_window)
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] >= 0.9 / rps
    assert (len(times) - 1) / (times[-1] - times[0]) <= rps * 1.05


def test_the_global_budget_is_shared_by_all_processes(upstream, pool) -> None:
    with gateway(*_searxng_args(upstream, "--budget", "10")) as gw:
        jobs = [[f"p{p} q{i}" for i in range(8)] for p in range(3)]
        outcomes = [o for batch in pool.starmap(workers.search_many, [(gw.url, q) for q in jobs]) for _, o in batch]
    assert outcomes.count("ok") == 10
    assert outcomes.count("BudgetExceededError") == 14
    assert len(upstream.queries()) == 10  # never overspent (budget is charged before the call goes out)


def test_the_same_query_from_different_processes_reaches_upstream_once(upstream, pool, tmp_path) -> None:
    upstream.delay_s = 0.3  # long enough that the processes ask while the first call is in flight
    cache = str(tmp_path / "shared.sqlite")
    queries = [f"shared question {i}" for i in range(6)]
    with gateway(*_searxng_args(upstream, "--cache-path", cache)) as gw:
        outcomes = pool.starmap(workers.search_many, [(gw.url, queries)] * 3)
    assert all(o == "ok" for batch in outcomes for _, o in batch)
    assert sorted(upstream.queries()) == sorted(queries)


def test_gateway_killed_mid_run_and_restarted_clients_finish(upstream, pool, tmp_path) -> None:
    upstream.delay_s = 0.2
    cache = str(tmp_path / "kill.sqlite")
    args = _searxng_args(upstream, "--cache-path", cache)
    gw = start_gateway(*args)
    port = gw.port
    try:
        pending = pool.starmap_async(workers.play_episodes, [(gw.url, 6, 0), (gw.url, 6, 1)])
        deadline = time.monotonic() + 60
        while len(upstream.queries()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        gw.proc.kill()  # kill -9, requests in flight
        gw.proc.wait(10)
        seen_before = len(upstream.queries())
        time.sleep(0.5)
        gw = start_gateway(*args, "--port", str(port))
        results = [summary for batch in pending.get(120) for summary in batch]
    finally:
        stop(gw)
    assert seen_before >= 2
    assert len(results) == 12
    assert all(r["error"] is None and r["done"] for r in results)
    assert not any("gateway search" in obs for r in results for obs in r["observations"])
    # Every answer the upstream gave is in the store: the restart lost nothing that was committed.
    queries = sorted(set(upstream.queries()))
    assert stored(cache, queries) == queries


def test_a_local_ray_cluster_shares_one_gateway(upstream, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    cache = str(tmp_path / "ray.sqlite")
    upstream.delay_s = 0.3
    shared = [f"ray shared {i}" for i in range(4)]
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"ray cannot start here: {exc}")
    try:
        with gateway(*_searxng_args(upstream, "--cache-path", cache, "--budget", "6")) as gw:
            task = ray.remote(workers.search_many)
            refs = [task.remote(gw.url, shared + [f"node {n} own {i}" for i in range(2)]) for n in range(2)]
            outcomes = [o for batch in ray.get(refs, timeout=120) for _, o in batch]
    finally:
        ray.shutdown()
    assert outcomes.count("ok") + outcomes.count("BudgetExceededError") == 12
    asked = upstream.queries()
    assert len(asked) == 6  # the budget held across the nodes: 8 distinct queries, 6 calls allowed
    assert all(asked.count(q) <= 1 for q in shared)  # a query both nodes asked went upstream at most once
    assert outcomes.count("ok") >= 6
