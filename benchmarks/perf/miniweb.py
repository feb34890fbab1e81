"""Throughput of the live path on the mini-web: searches and page reads per second, all on loopback.

What is timed, on one event loop (client and server share it, as in the env's tests):

* ``search``: ``MiniWebBackend.search``: SearxNG client → HTTP → the site's BM25 → JSON → results;
* ``fetch``: ``Fetcher.fetch`` of article pages alone (SSRF guard, HTTP, gzip, decoding);
* ``open``: ``MiniWebBackend.open``: fetch plus HTML extraction (the whole page read), one at a time and with
  several reads in flight;
* ``extract``: the extractor alone on the same HTML, in this thread (CPU cost per page);
* ``episodes``: scripted-agent episodes through the env on miniweb, against the same on the ``local`` backend;
* ``concurrent episodes``: ``--concurrent`` (512) scripted episodes at once over the mini-web by name
  (``search="miniweb"``: the metered live stack) with ``drgym.arun_episodes``: episodes/s and step latency
  (p50/p95, per tool); then the same episodes twice with the env's ``cache_path=`` (a SQLite cache): a cold
  pass that fills it and a warm pass, with the hit rate of each (searches: ``cache_hits / (cache_hits +
  calls)`` from the run's ``ToolServices.usage_summary()``; pages: the share of page reads that never reached
  the site).

Pages are articles of the corpus (``wiki-local`` when its data are available, else ``demo``), chosen by a
fixed seed. Figures are wall-clock rates on a shared machine: compare runs on the same machine only.

    python -m benchmarks.perf.miniweb [--quick] [--corpus demo|wiki-local] [--pages 400] [--concurrency 16]
                                      [--concurrent 512] [--skip-serial]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

import drgym  # noqa: F401  (registers the env ids)
from drgym.agents.scripted import ScriptedAgent
from drgym.miniweb import MiniWebBackend
from drgym.web.extract import extract
from drgym.web.fetch import Fetcher

__all__ = ["main"]


async def _rate(items: Sequence[str], work: Callable[[str], Awaitable[object]], concurrency: int) -> float:
    """Items per second of ``work`` over ``items`` with ``concurrency`` calls in flight."""
    queue = list(items)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(items) / (time.perf_counter() - started)


async def _live_path(corpus: str, pages: int, queries: int, concurrency: int) -> list[tuple[str, float, str]]:
    backend = MiniWebBackend(corpus=corpus)
    try:
        started = time.perf_counter()
        await backend.start()
        startup = time.perf_counter() - started
        wiki = backend.wiki
        assert wiki is not None
        rng = random.Random(0)
        titles = rng.sample(wiki.titles, min(pages, len(wiki.titles)))
        urls = [await backend.url_for(t) for t in titles]
        words = [t.split()[0] for t in titles]
        questions = [" ".join(rng.sample(words, min(3, len(words)))) for _ in range(queries)]
        await _rate(urls[:10], backend.open, 4)  # warm connections and caches
        rows = [("site start (load + index)", startup, "s")]
        rows.append(
            ("search, 1 in flight", await _rate(questions, lambda q: backend.search(q, 10), 1), "queries/s")
        )
        rows.append(
            (
                f"search, {concurrency} in flight",
                await _rate(questions, lambda q: backend.search(q, 10), concurrency),
                "queries/s",
            )
        )
        async with Fetcher(backend.fetch_config) as fetcher:
            rows.append(("fetch only, 1 in flight", await _rate(urls, fetcher.fetch, 1), "pages/s"))
            html = [(await fetcher.fetch(u)).text for u in urls[:50]]
        rows.append(("open = fetch + extract, 1 in flight", await _rate(urls, backend.open, 1), "pages/s"))
        rows.append(
            (
                f"open = fetch + extract, {concurrency} in flight",
                await _rate(urls, backend.open, concurrency),
                "pages/s",
            )
        )
        t0 = time.perf_counter()
        for text in html:
            extract(text, "http://127.0.0.1/")
        rows.append(("extract only (this thread)", len(html) / (time.perf_counter() - t0), "pages/s"))
        rows.append(("mean article HTML", sum(map(len, html)) / len(html) / 1024, "KiB"))
        return rows
    finally:
        await backend.aclose()


def _episodes(dataset: str, corpus: str, episodes: int) -> list[tuple[str, float, str]]:
    rows = []
    mini = MiniWebBackend(corpus=corpus)
    from drgym.runner import run_episode
    from drgym.services import ToolServices

    shared = ToolServices()  # the envs' loops (the site runs on the sync API's loop) and the local index

    try:
        for label, search in (("local", "local"), ("miniweb", mini)):
            env = gym.make("drgym/WebResearch-v0", dataset=dataset, search=search, services=shared)
            n = len(env.unwrapped.records)
            run_episode(env, ScriptedAgent(), options={"index": 0})  # warm-up: index, site, connections
            started = time.perf_counter()
            trajs = [run_episode(env, ScriptedAgent(), options={"index": i % n}) for i in range(episodes)]
            wall = time.perf_counter() - started
            env.close()
            f1 = sum(t.f1 for t in trajs) / len(trajs)
            rows.append((f"episodes on {label} (mean F1 {f1:.3f})", len(trajs) / wall, "episodes/s"))
    finally:
        shared.run(mini.aclose())
        shared.close()
    return rows


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _totals(services: Any) -> dict[str, int]:
    total = services.usage_summary()["total"]
    return {key: int(total[key]) for key in ("calls", "cache_hits", "opens", "failures")}


async def _episode_pass(
    dataset: str, corpus: str, episodes: int, cache_path: str | None, services: Any
) -> tuple[float, list[Any], dict[str, int]]:
    """One batch of ``episodes`` scripted episodes, all in flight at once; (wall s, trajectories, usage delta)."""
    from drgym import arun_episodes

    def make() -> gym.Env:
        return gym.make(
            "drgym/WebResearch-v0", dataset=dataset, search="miniweb", corpus=corpus, cache_path=cache_path,
            services=services,
        )

    pool = [make() for _ in range(episodes)]  # built before the clock starts (each loads the question set)
    n = len(pool[0].unwrapped.records)
    before = _totals(services)
    started = time.perf_counter()
    trajs = await arun_episodes(pool.pop, ScriptedAgent, [{"index": i % n} for i in range(episodes)],
                                concurrency=episodes)
    wall = time.perf_counter() - started
    after = _totals(services)
    return wall, trajs, {key: after[key] - before[key] for key in after}


def _pass_rows(label: str, wall: float, trajs: Sequence[Any]) -> list[tuple[str, float, str]]:
    steps = [t.step_time_s * 1000 for traj in trajs for t in traj.turns]
    by_tool: dict[str, list[float]] = {}
    for traj in trajs:
        for turn in traj.turns:
            by_tool.setdefault(turn.tool or "answer", []).append(turn.step_time_s * 1000)
    errors = sum(t.error is not None for t in trajs)
    f1 = statistics.fmean(t.f1 for t in trajs) if trajs else float("nan")
    rows = [
        (f"{label}: {len(trajs)} episodes at once (mean F1 {f1:.3f}, {errors} errors)", len(trajs) / wall,
         "episodes/s"),
        ("  wall", wall, "s"),
        ("  step latency p50", _percentile(steps, 0.5), "ms"),
        ("  step latency p95", _percentile(steps, 0.95), "ms"),
    ]
    for tool in ("web_search", "browse_webpage"):
        if tool in by_tool:
            rows.append((f"  {tool} p95", _percentile(by_tool[tool], 0.95), "ms"))
    return rows


def _hit_rows(label: str, trajs: Sequence[Any], usage: dict[str, int]) -> list[tuple[str, float, str]]:
    searches = usage["calls"] + usage["cache_hits"]
    reads = sum(t.pages_read for t in trajs)
    return [
        (f"  {label} search cache hit rate ({usage['cache_hits']}/{searches})",
         100.0 * usage["cache_hits"] / searches if searches else float("nan"), "%"),
        (f"  {label} page cache hit rate ({reads - usage['opens']}/{reads} reads)",
         100.0 * (reads - usage["opens"]) / reads if reads else float("nan"), "%"),
    ]


async def _concurrent(dataset: str, corpus: str, episodes: int) -> list[tuple[str, float, str]]:
    from drgym.services import ToolServices

    rows: list[tuple[str, float, str]] = []
    async with ToolServices() as shared:  # one site, one set of sessions, one meter for every pass
        await _episode_pass(dataset, corpus, min(episodes, 16), None, shared)  # warm-up: index, site, sessions
        wall, trajs, _ = await _episode_pass(dataset, corpus, episodes, None, shared)
        rows += _pass_rows("no cache", wall, trajs)
        with tempfile.TemporaryDirectory() as tmp:
            cache = str(Path(tmp) / "cache.sqlite")
            async with ToolServices() as cached:  # the cache's SQLite file is closed before its folder goes
                wall, trajs, usage = await _episode_pass(dataset, corpus, episodes, cache, cached)
                rows += _pass_rows("cache_path, cold", wall, trajs) + _hit_rows("cold", trajs, usage)
                wall, trajs, usage = await _episode_pass(dataset, corpus, episodes, cache, cached)
                rows += _pass_rows("cache_path, warm (second pass)", wall, trajs) + _hit_rows("warm", trajs, usage)
    return rows


def _corpus_available(name: str) -> bool:
    from drgym.data import dataset_info

    return bool(dataset_info(name)["available"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="demo corpus, a few pages and episodes")
    parser.add_argument("--corpus", help="corpus to serve (default: wiki-local when available, else demo)")
    parser.add_argument("--pages", type=int, default=400, help="article pages read per measurement")
    parser.add_argument("--queries", type=int, default=300, help="searches per measurement")
    parser.add_argument("--episodes", type=int, default=100, help="scripted episodes per backend")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight in the concurrent runs"
    )
    parser.add_argument("--concurrent", type=int, default=512, help="episodes in flight in the batch runs")
    parser.add_argument("--skip-serial", action="store_true", help="only the concurrent-episode measurements")
    args = parser.parse_args(argv)
    if args.quick:
        corpus, args.pages, args.queries, args.episodes = args.corpus or "demo", 40, 40, 10
        args.concurrent = min(args.concurrent, 32)
    else:
        corpus = args.corpus or ("wiki-local" if _corpus_available("wiki-local") else "demo")
    dataset = "demo" if corpus == "demo" else "hotpotqa-dev500"
    rows: list[tuple[str, float, str]] = []
    if not args.skip_serial:
        rows += asyncio.run(_live_path(corpus, args.pages, args.queries, args.concurrency))
        rows += _episodes(dataset, corpus, args.episodes)
    rows += asyncio.run(_concurrent(dataset, corpus, args.concurrent))
    width = max(len(name) for name, _, _ in rows)
    print(f"miniweb live path, corpus {corpus} (wall-clock; loopback, one event loop)")
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10.1f}  {unit}")


if __name__ == "__main__":
    main()
