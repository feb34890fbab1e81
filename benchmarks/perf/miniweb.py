"""Throughput of the live path on the mini-web: searches and page reads per second, all on loopback.

What is timed, on one event loop (client and server share it, as in the env's tests):

* ``search``: ``MiniWebBackend.search``: SearxNG client → HTTP → the site's BM25 → JSON → results;
* ``fetch``: ``Fetcher.fetch`` of article pages alone (SSRF guard, HTTP, gzip, decoding);
* ``open``: ``MiniWebBackend.open``: fetch plus HTML extraction (the whole page read), one at a time and with
  several reads in flight;
* ``extract``: the extractor alone on the same HTML, in this thread (CPU cost per page);
* ``episodes``: scripted-agent episodes through the env on miniweb, against the same on the ``local`` backend.

Pages are articles of the corpus (``wiki-local`` when its data are available, else ``demo``), chosen by a
fixed seed. Figures are wall-clock rates on a shared machine: compare runs on the same machine only.

    python -m benchmarks.perf.miniweb [--quick] [--corpus demo|wiki-local] [--pages 400] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import gymnasium as gym

import drgym  # noqa: F401  (registers the env ids)
from agents.scripted import ScriptedAgent
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
    from drgym._loop import run_sync
    from drgym.runner import run_episode

    try:
        for label, search in (("local", "local"), ("miniweb", mini)):
            env = gym.make("drgym/WebResearch-v0", dataset=dataset, search=search)
            n = len(env.unwrapped.records)
            run_episode(env, ScriptedAgent(), options={"index": 0})  # warm-up: index, site, connections
            started = time.perf_counter()
            trajs = [run_episode(env, ScriptedAgent(), options={"index": i % n}) for i in range(episodes)]
            wall = time.perf_counter() - started
            env.close()
            f1 = sum(t.f1 for t in trajs) / len(trajs)
            rows.append((f"episodes on {label} (mean F1 {f1:.3f})", len(trajs) / wall, "episodes/s"))
    finally:
        run_sync(mini.aclose())
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
    args = parser.parse_args(argv)
    if args.quick:
        corpus, args.pages, args.queries, args.episodes = args.corpus or "demo", 40, 40, 10
    else:
        corpus = args.corpus or ("wiki-local" if _corpus_available("wiki-local") else "demo")
    dataset = "demo" if corpus == "demo" else "hotpotqa-dev500"
    rows = asyncio.run(_live_path(corpus, args.pages, args.queries, args.concurrency))
    rows += _episodes(dataset, corpus, args.episodes)
    width = max(len(name) for name, _, _ in rows)
    print(f"miniweb live path, corpus {corpus} (wall-clock; loopback, one event loop)")
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10.1f}  {unit}")


if __name__ == "__main__":
    main()
