"""Fetch and extraction throughput on loopback, and many slow fetches in flight at once with bounded memory.

The mini-web runs in its own process (``drgym miniweb serve``), so client and server each have a core of a
2-core machine. What is timed, in this (client) process, on one event loop:

* ``fetch``: ``Fetcher.fetch`` of article pages (SSRF guard, HTTP, gzip, charset decoding), ``--concurrency``
  in flight: pages/s, MB/s on the wire (compressed) and MB/s of HTML delivered;
* ``fetch + extract``: the same plus HTML → markdown in a worker thread (what ``PageOpener`` did), and in an
  :class:`~drgym.web.isolation.IsolatedPool` of two worker processes (what it does now);
* ``1000 fetches, 200 ms latency``: a second server delays every answer by ``--latency-ms``; all fetches start
  at once (one session, connection limits raised to match). The wall time shows how many were in flight
  (``fetches × latency / wall``; the target is under 2 s for 1000 at 200 ms); memory is the process's RSS
  growth and peak over the run, and in a second, untimed run the peak of Python allocations (tracemalloc).

Figures are wall-clock rates on a shared machine: compare runs on the same machine only.

    python -m benchmarks.perf.fetch [--quick] [--corpus demo|wiki-local] [--pages 1000] [--concurrency 32]
                                    [--fetches 1000] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import selectors
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from urllib.parse import quote

__all__ = ["main"]

_MB = 1024 * 1024


@contextlib.contextmanager
def miniweb(corpus: str, *extra: str) -> Iterator[str]:
    """Run ``drgym miniweb serve`` in a child process; yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "drgym.cli", "miniweb", "serve", "--corpus", corpus, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=300):
                raise SystemExit("the mini-web did not start within 300 s")
        line = proc.stdout.readline()
        if not line.startswith("miniweb: serving"):
            err = proc.stderr.read() if proc.stderr else ""
            raise SystemExit(f"the mini-web failed to start: {line!r} {err[-2000:]}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _titles(corpus: str, n: int) -> list[str]:
    from drgym.data import load_corpus

    titles = sorted({p.title for p in load_corpus(corpus) if p.title})
    rng = random.Random(0)
    return [rng.choice(titles) for _ in range(n)] if n > len(titles) else rng.sample(titles, n)


def _urls(base: str, titles: Sequence[str]) -> list[str]:
    # A distinct query per fetch: nothing on either side can serve a repeat from a cache.
    return [f"{base}/wiki/{quote(t, safe='')}?n={i}" for i, t in enumerate(titles)]


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover - not Linux


async def _pool(items: Sequence[str], work: Callable[[str], Awaitable[object]], concurrency: int) -> float:
    """Seconds to run ``work`` over ``items`` with ``concurrency`` calls in flight."""
    queue = list(reversed(items))
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _throughput(base: str, titles: Sequence[str], concurrency: int) -> list[tuple[str, float, str]]:
    from drgym.web.extract import extract
    from drgym.web.fetch import FetchConfig, Fetcher
    from drgym.web.isolation import IsolatedPool

    config = FetchConfig(
        allow_hosts=frozenset({"127.0.0.1"}),
        per_host_rate=None,
        max_connections=max(64, concurrency),
        max_connections_per_host=max(64, concurrency),
    )
    wire = html = 0
    failures = 0

    async def fetch(url: str) -> None:
        nonlocal wire, html, failures
        try:
            page = await fetcher.fetch(url)
        except Exception:  # noqa: BLE001  (counted and reported, never expected)
            failures += 1
            return
        wire += page.raw_bytes_len
        html += len(page.text.encode())

    async def fetch_extract(url: str) -> None:
        page = await fetcher.fetch(url)
        await asyncio.to_thread(extract, page.text, page.url)

    async def fetch_isolated(url: str) -> None:
        page = await fetcher.fetch(url)
        await pool.run(extract, page.text, page.url)

    pool = IsolatedPool()
    await pool.run(len, "started")
    async with Fetcher(config) as fetcher:
        await _pool(_urls(base, titles[:50]), fetch, 8)  # warm connections
        wire = html = failures = 0
        n = len(titles)
        fetch_s = await _pool(_urls(base, titles), fetch, concurrency)
        rows = [
            (f"fetch, {concurrency} in flight", n / fetch_s, "pages/s"),
            ("  wire (gzip)", wire / _MB / fetch_s, "MB/s"),
            ("  HTML delivered", html / _MB / fetch_s, "MB/s"),
            ("  mean page: wire / HTML", wire / n / 1024, f"KiB / {html / n / 1024:.1f} KiB"),
        ]
        both_s = await _pool(_urls(base, titles), fetch_extract, concurrency)
        isolated_s = await _pool(_urls(base, titles), fetch_isolated, concurrency)
        pool.close()
        rows += [
            (f"fetch + extract (thread), {concurrency} in flight", n / both_s, "pages/s"),
            ("  HTML processed", html / _MB / both_s, "MB/s"),
            (f"fetch + extract (IsolatedPool, what PageOpener does), {concurrency} in flight", n / isolated_s,
             "pages/s"),
        ]
        if failures:
            rows.append(("fetch failures", failures, "pages"))
    return rows


async def _many_slow(base: str, titles: Sequence[str], traced: bool) -> tuple[float, int, int, float, float]:
    """Fetch every title at once; return (wall s, failures, most in flight, RSS growth MB, traced peak MB)."""
    import gc

    from drgym.web.fetch import FetchConfig, Fetcher

    n = len(titles)
    config = FetchConfig(
        allow_hosts=frozenset({"127.0.0.1"}),
        per_host_rate=None,
        max_connections=n,
        max_connections_per_host=n,
        connect_timeout=10.0,
    )
    urls = _urls(base, titles)
    async with Fetcher(config) as fetcher:
        await fetcher.fetch(urls[0])  # the session exists before the clock starts
        gc.collect()
        rss_before = _rss_mb()
        if traced:
            tracemalloc.start()
        in_flight = most = 0

        async def fetch(url: str) -> object:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await fetcher.fetch(url)
            finally:
                in_flight -= 1

        started = time.perf_counter()
        results = await asyncio.gather(*(fetch(u) for u in urls), return_exceptions=True)
        wall = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / _MB if traced else float("nan")
        if traced:
            tracemalloc.stop()
        failures = sum(isinstance(r, BaseException) for r in results)
        del results
        gc.collect()
        growth = _rss_mb() - rss_before
    return wall, failures, most, growth, peak


def _corpus_available(name: str) -> bool:
    from drgym.data import dataset_info

    return bool(dataset_info(name)["available"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="demo corpus, 100 pages, 200 slow fetches")
    parser.add_argument("--corpus", help="corpus to serve (default: wiki-local when available, else demo)")
    parser.add_argument("--pages", type=int, default=1000, help="article pages per throughput measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="fetches in flight in the throughput runs")
    parser.add_argument("--fetches", type=int, default=1000, help="fetches started at once in the latency run")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="latency the second server injects")
    args = parser.parse_args(argv)
    if args.quick:
        corpus, args.pages, args.fetches = args.corpus or "demo", 100, 200
    else:
        corpus = args.corpus or ("wiki-local" if _corpus_available("wiki-local") else "demo")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 2 * args.fetches + 256))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    titles = _titles(corpus, max(args.pages, args.fetches))
    with miniweb(corpus) as base:
        rows = asyncio.run(_throughput(base, titles[: args.pages], args.concurrency))
    with miniweb(corpus, "--latency-ms", f"{args.latency_ms:g}") as base:
        peak_rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu = time.process_time()
        wall, failures, most, growth, _ = asyncio.run(_many_slow(base, titles[: args.fetches], traced=False))
        cpu = time.process_time() - cpu
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        *_, traced_peak = asyncio.run(_many_slow(base, titles[: args.fetches], traced=True))
    n, latency = args.fetches, args.latency_ms / 1000
    rows += [
        (f"{n} fetches at once, {args.latency_ms:g} ms latency: wall", wall, "s (target < 2 s for 1000 at 200 ms)"),
        ("  most fetches in flight at once", most, "fetches"),
        ("  mean in flight (n x latency / wall)", n * latency / wall, "fetches"),
        ("  client CPU time (incl. setup)", cpu, "s"),
        ("  failures", failures, "fetches"),
        ("  RSS after - before", growth, "MB"),
        ("  peak RSS (process) before / after", peak_rss_before, f"MB / {peak_rss:.0f} MB"),
        ("  peak Python allocations (tracemalloc run)", traced_peak, "MB"),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"fetch on loopback, corpus {corpus}; the mini-web in its own process (wall-clock)")
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10.2f}  {unit}")


if __name__ == "__main__":
    main()
