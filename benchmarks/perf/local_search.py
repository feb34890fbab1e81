"""Local BM25 search over wiki-local: index build and load time, query latency, throughput, memory, recall.

Build and load each run in a fresh subprocess, so their times (cold imports excluded) and peak RSS
(``resource.getrusage``) are separate figures. The index goes to a temporary directory, so the build is
always a real one and the user's cache is left alone. Queries are the HotpotQA dev-500 questions (their
supporting paragraphs are in wiki-local; recall@10 counts how many of those paragraphs' titles come back).

    python -m benchmarks.perf.local_search [--quick] [--queries 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CORPUS = "wiki-local"
QUICK_PASSAGES = 3000
_REPO = Path(__file__).resolve().parents[2]


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _passages(quick: bool) -> list[Any]:
    from drgym.data import load_corpus

    passages = load_corpus(CORPUS)
    return passages[:QUICK_PASSAGES] if quick else passages


def _questions(quick: bool, limit: int) -> list[tuple[str, tuple[str, ...]]]:
    """(question, supporting titles) pairs; passage titles when the QA set cannot be loaded."""
    limit = min(limit, 50) if quick else limit
    from drgym.data import load_dataset
    from drgym.errors import DrgymError

    try:
        records = load_dataset("hotpotqa-dev500", limit=limit)
        return [(r.question, tuple(r.metadata.get("supporting_titles", ()))) for r in records]
    except DrgymError as exc:  # a benchmark should still run on a corpus-only machine
        print(f"(hotpotqa-dev500 unavailable: {exc}; using passage titles as queries)", file=sys.stderr)
        return [(p.title, ()) for p in _passages(quick)[:limit]]


def _import_s() -> float:
    """Import the backend and bm25s up front, so the build and load figures exclude import time."""
    started = time.perf_counter()
    import bm25s  # noqa: F401

    import drgym.search.local  # noqa: F401

    return time.perf_counter() - started


def _phase_build(index_dir: Path, quick: bool) -> dict[str, Any]:
    import_s = _import_s()
    from drgym.search.local import BM25Backend

    started = time.perf_counter()
    passages = _passages(quick)
    corpus_s = time.perf_counter() - started
    rss_corpus = _peak_rss_mb()
    started = time.perf_counter()
    backend = BM25Backend(passages, corpus=CORPUS, index_dir=index_dir, rebuild=True)
    total_s = time.perf_counter() - started
    assert backend.index_info.built and backend.index_info.path is not None
    size = sum(f.stat().st_size for f in backend.index_info.path.iterdir())
    return {
        "passages": len(passages),
        "import_s": import_s,
        "corpus_load_s": corpus_s,
        "build_s": backend.index_info.seconds,
        "build_total_s": total_s,  # + fingerprint, checks and writing the cache
        "index_mb": size / (1 << 20),
        "rss_corpus_mb": rss_corpus,
        "rss_peak_mb": _peak_rss_mb(),
    }


async def _latencies(backend: Any, questions: list[str]) -> dict[str, Any]:
    await backend.search(questions[0])  # warm the worker thread pool
    single = []
    for question in questions:
        t0 = time.perf_counter()
        await backend.search(question, 10)
        single.append(time.perf_counter() - t0)
    batches = [questions[i : i + 3] for i in range(0, len(questions), 3)]
    t0 = time.perf_counter()
    for batch in batches:
        await backend.search_many(batch, 10)
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(16)

    async def one(batch: list[str]) -> None:
        async with sem:
            await backend.search_many(batch, 10)

    await asyncio.gather(*(one(b) for b in batches))
    concurrent_s = time.perf_counter() - t0
    quantiles = statistics.quantiles(single, n=100) if len(single) > 1 else single * 99
    return {
        "queries": len(questions),
        "p50_ms": 1000 * quantiles[49],
        "p95_ms": 1000 * quantiles[94],
        "mean_ms": 1000 * statistics.fmean(single),
        "batched_qps": len(questions) / batched_s,
        "concurrent_qps": len(questions) / concurrent_s,
    }


async def _recall(backend: Any, items: list[tuple[str, tuple[str, ...]]]) -> float | None:
    golds = [(q, set(t)) for q, t in items if t]
    if not golds:
        return None
    found = total = 0
    results = await backend.search_many([q for q, _ in golds], 10)
    for (_, titles), hits in zip(golds, results):
        found += len(titles & {r.title for r in hits})
        total += len(titles)
    return found / total


def _phase_load(index_dir: Path, quick: bool, queries: int) -> dict[str, Any]:
    _import_s()
    from drgym.search.local import BM25Backend

    passages = _passages(quick)
    rss_corpus = _peak_rss_mb()
    started = time.perf_counter()
    backend = BM25Backend(passages, corpus=CORPUS, index_dir=index_dir)
    total_s = time.perf_counter() - started
    assert not backend.index_info.built, "the load phase rebuilt the index: the cache was not reused"
    rss_loaded = _peak_rss_mb()
    items = _questions(quick, queries)
    timing = asyncio.run(_latencies(backend, [q for q, _ in items]))
    recall = asyncio.run(_recall(backend, items))
    return {
        "load_s": backend.index_info.seconds,
        "load_total_s": total_s,  # + fingerprinting the passages
        "rss_corpus_mb": rss_corpus,
        "rss_loaded_mb": rss_loaded,
        "rss_peak_mb": _peak_rss_mb(),
        "recall_at_10": recall,
        **timing,
    }


def _run_phase(phase: str, index_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        __spec__.name if __spec__ else "benchmarks.perf.local_search",
        "--phase",
        phase,
        "--index-dir",
        str(index_dir),
    ]
    cmd += ["--queries", str(args.queries)] + (["--quick"] if args.quick else [])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{phase} phase failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(build: dict[str, Any], load: dict[str, Any], quick: bool) -> str:
    recall = "n/a" if load["recall_at_10"] is None else f"{load['recall_at_10']:.3f}"
    rows = [
        ("passages", f"{build['passages']}" + (" (--quick subset)" if quick else "")),
        ("import bm25s + backend", f"{build['import_s']:.2f} s (excluded below)"),
        ("corpus load (load_corpus)", f"{build['corpus_load_s']:.2f} s"),
        ("index build", f"{build['build_s']:.2f} s ({build['build_total_s']:.2f} s with hashing + writing)"),
        ("index load from cache", f"{load['load_s']:.3f} s ({load['load_total_s']:.3f} s with fingerprint)"),
        ("build / load", f"{build['build_total_s'] / load['load_total_s']:.0f}x"),
        ("index on disk", f"{build['index_mb']:.1f} MiB"),
        ("query latency p50 / p95", f"{load['p50_ms']:.2f} / {load['p95_ms']:.2f} ms (k=10, with snippets)"),
        ("throughput, batches of 3", f"{load['batched_qps']:.0f} queries/s"),
        ("throughput, 16 batches in flight", f"{load['concurrent_qps']:.0f} queries/s"),
        ("recall@10 of supporting titles", f"{recall} ({load['queries']} HotpotQA questions)"),
        ("peak RSS: corpus only", f"{build['rss_corpus_mb']:.0f} MiB"),
        ("peak RSS: build process", f"{build['rss_peak_mb']:.0f} MiB"),
        ("peak RSS: load process, after load", f"{load['rss_loaded_mb']:.0f} MiB"),
        ("peak RSS: load process, after queries", f"{load['rss_peak_mb']:.0f} MiB"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"local BM25 search over {CORPUS}",
        f"| {'metric'.ljust(width)} | value |",
        f"|{'-' * (width + 2)}|---|",
    ]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"first {QUICK_PASSAGES} passages, 50 queries")
    parser.add_argument("--queries", type=int, default=500, help="questions to time (HotpotQA dev-500)")
    parser.add_argument("--phase", choices=["build", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "build":
        print(json.dumps(_phase_build(args.index_dir, args.quick)))
        return
    if args.phase == "load":
        print(json.dumps(_phase_load(args.index_dir, args.quick, args.queries)))
        return
    with tempfile.TemporaryDirectory(prefix="drgym-bench-index-") as tmp:
        build = _run_phase("build", Path(tmp), args)
        load = _run_phase("load", Path(tmp), args)
    print(_table(build, load, args.quick))


if __name__ == "__main__":
    main()
