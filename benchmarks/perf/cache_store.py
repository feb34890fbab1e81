"""Search-store speed: cache hit latency, replay hit latency, write throughput, eviction, export/import.

    python -m benchmarks.perf.cache_store [--quick] [-n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from drgym.document import Document
from drgym.search.base import Result
from drgym.search.cache import SearchStore
from drgym.search.replay import RecordingBackend, ReplayBackend


class Loopless:
    """A backend that answers instantly from memory, so only the store is timed."""

    name = "bench"

    def __init__(self) -> None:
        self.results = [
            Result(f"title {i}", f"https://e.example/{i}", "snippet " * 30, {"position": i}) for i in range(10)
        ]

    async def search(self, query: str, k: int = 10) -> list[Result]:
        return self.results[:k]

    async def open(self, url: str) -> Document:
        return Document(url, "t", "word " * 4000)

    async def aclose(self) -> None:
        return None


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def run(n: int, tmp: Path) -> list[tuple[str, str]]:
    rows = []
    inner = Loopless()
    store = SearchStore(tmp / "cache.sqlite")
    cache = ReplayBackend(store, strict=False, inner=inner)
    t0 = time.perf_counter()
    for i in range(n):
        await cache.search(f"query {i}", 10)
    dt = time.perf_counter() - t0
    rows.append(("cache miss+store (search, 10 hits), sequential", f"{n / dt:,.0f}/s  ({dt / n * 1e6:,.0f} us each)"))
    lat = []
    for i in range(n):
        s = time.perf_counter()
        await cache.search(f"query {i}", 10)
        lat.append(time.perf_counter() - s)
    rows.append(("cache hit (read-write: counts + LRU touch)", f"p50 {statistics.median(lat) * 1e6:,.0f} us, p99 {pct(lat, .99) * 1e6:,.0f} us"))
    t0 = time.perf_counter()
    await asyncio.gather(*(cache.search(f"query {i % n}", 10) for i in range(n)))
    dt = time.perf_counter() - t0
    rows.append(("cache hits, all at once (gather)", f"{n / dt:,.0f}/s"))
    t0 = time.perf_counter()
    for i in range(n // 4):
        await cache.open(f"https://e.example/page/{i}")
    dt = time.perf_counter() - t0
    rows.append(("page store (20 kB doc), sequential", f"{(n // 4) / dt:,.0f}/s"))
    store.close()

    rec = RecordingBackend(inner, tmp / "rec.sqlite")
    t0 = time.perf_counter()
    for i in range(n):
        await rec.search(f"query {i}", 10)
    dt = time.perf_counter() - t0
    rows.append(("record mode write (pin + episode link)", f"{n / dt:,.0f}/s"))
    await rec.aclose()

    replay = ReplayBackend(tmp / "rec.sqlite")
    lat = []
    for i in range(n):
        s = time.perf_counter()
        await replay.search(f"query {i}", 10)
        lat.append(time.perf_counter() - s)
    rows.append(("strict replay hit (read only)", f"p50 {statistics.median(lat) * 1e6:,.0f} us, p99 {pct(lat, .99) * 1e6:,.0f} us"))
    await replay.aclose()

    sync = SearchStore(tmp / "sync.sqlite", max_entries=n // 2)
    res = inner.results
    t0 = time.perf_counter()
    for i in range(n):
        sync.put_search_sync("b", f"q{i}", 10, res, evict=True)
    dt = time.perf_counter() - t0
    rows.append(("put_search_sync with LRU eviction (cap n/2)", f"{n / dt:,.0f}/s"))
    t0 = time.perf_counter()
    count = SearchStore(tmp / "cache.sqlite").export_sync(tmp / "x.jsonl.gz")
    dt = time.perf_counter() - t0
    size = (tmp / "x.jsonl.gz").stat().st_size
    rows.append(("export (gzip JSONL)", f"{count / dt:,.0f} entries/s, {size / 1e6:.2f} MB for {count}"))
    t0 = time.perf_counter()
    SearchStore(tmp / "imp.sqlite").import_sync(tmp / "x.jsonl.gz")
    dt = time.perf_counter() - t0
    rows.append(("import (one transaction, validated)", f"{count / dt:,.0f} entries/s"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.n
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(run(n, Path(tmp)))
    width = max(len(r[0]) for r in rows)
    print(f"search store, n={n}")
    for name, value in rows:
        print(f"  {name:{width}}  {value}")


if __name__ == "__main__":
    main()
