"""What isolating page extraction costs: ``IsolatedPool.run(extract, ...)`` against ``extract`` in a thread.

``PageOpener`` extracts every page in a worker process (:mod:`drgym.web.isolation`) so a page that is slow to
parse can be stopped. This measures the price, per page, for three sizes of page (a short article, a
Wikipedia-sized one, a 1 MB one):

* ``inline``: ``extract`` called in this thread (the CPU cost of the page itself);
* ``thread``: ``asyncio.to_thread(extract, ...)``, what the opener did before;
* ``pool``: ``IsolatedPool.run(extract, ...)`` (pickling, two pipe transfers, a thread hand-off);

each one call at a time (latency: median over ``--repeat`` calls) and with ``--inflight`` calls in flight
(throughput). Then the time to replace a killed worker (kill, start a new interpreter, import the extractor).
Ratios are against ``inline`` in the same process. Wall-clock on a shared machine: compare runs on one machine.

    python -m benchmarks.perf.isolation [--quick] [--repeat 40] [--inflight 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from drgym.web.extract import extract
from drgym.web.isolation import IsolatedPool

__all__ = ["main"]

_SENTENCE = "The lighthouse at Kellport was designed by Marta Quell, lit in 1871, and rebuilt after the storm of 1903. "


def _page(paragraphs: int) -> str:
    body = "".join(f"<p>{_SENTENCE * 4}</p>" for _ in range(paragraphs))
    nav = "<nav><a href='/'>Home</a> <a href='/news'>News</a></nav>"
    return f"<html><head><title>Kellport</title></head><body>{nav}<article><h1>Kellport</h1>{body}</article></body></html>"


PAGES = {"small (3 kB)": _page(6), "wiki-sized (60 kB)": _page(130), "large (1 MB)": _page(2200)}


async def _latency(call: Callable[[], Awaitable[object]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def _throughput(call: Callable[[], Awaitable[object]], total: int, inflight: int) -> float:
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return total / (time.perf_counter() - started)


async def _replacement_s(pool: IsolatedPool) -> float:
    """Seconds from killing a busy worker to the next call's answer (a fresh worker had to start)."""
    await pool.run(len, "warm")
    started = time.perf_counter()
    try:
        await asyncio.wait_for(pool.run(time.sleep, 30), 0.01)
    except asyncio.TimeoutError:
        pass
    while len(pool.pids) < pool.workers:
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def _run(repeat: int, inflight: int, workers: int) -> list[tuple[str, float, str]]:
    pool = IsolatedPool(workers=workers)
    rows: list[tuple[str, float, str]] = []
    try:
        await pool.run(extract, PAGES["small (3 kB)"])  # workers started and warm
        for label, html in PAGES.items():
            n = max(3, repeat if len(html) < 100_000 else repeat // 4)

            async def inline(html: str = html) -> object:
                return extract(html, "http://example.org/")

            async def thread(html: str = html) -> object:
                return await asyncio.to_thread(extract, html, "http://example.org/")

            async def isolated(html: str = html) -> object:
                return await pool.run(extract, html, "http://example.org/")

            for call in (inline, thread, isolated):  # warm every path (parser caches, the workers' imports)
                await _latency(call, 2)
            base = await _latency(inline, n)
            rows.append((f"{label}: inline, one at a time", base, "ms/page"))
            for name, call in (("thread", thread), ("pool", isolated)):
                ms = await _latency(call, n)
                rows.append((f"{label}: {name}, one at a time (x{ms / base:.2f} inline)", ms, "ms/page"))
            base_rate = await _throughput(inline, n, 1)
            for name, call in (("thread", thread), ("pool", isolated)):
                rate = await _throughput(call, n, inflight)
                rows.append((f"{label}: {name}, {inflight} in flight (x{rate / base_rate:.2f} inline rate)", rate,
                             "pages/s"))
        rows.append(("replace a killed worker (kill to ready)", await _replacement_s(pool) * 1000, "ms"))
    finally:
        pool.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few calls per measurement")
    parser.add_argument("--repeat", type=int, default=40, help="calls per latency measurement")
    parser.add_argument("--inflight", type=int, default=8, help="calls in flight in the throughput runs")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the pool")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 4
    rows = asyncio.run(_run(args.repeat, args.inflight, args.workers))
    width = max(len(name) for name, _, _ in rows)
    print(f"isolated extraction: {args.workers} worker processes (wall-clock, this machine)")
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10.2f}  {unit}")


if __name__ == "__main__":
    main()
