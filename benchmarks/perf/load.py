"""Load: thousands of scripted episodes at once on one event loop over the in-process mini-web.

Issue 12 found that 2,000 concurrent episodes with ``search="miniweb"`` (the site started inside the same
process, on the same loop as its clients) lost almost half their searches to "no answer within 20 s", while the
same load against an external ``drgym miniweb serve`` lost 0.15%. This script measures that load, so a fix can
be checked and a regression seen:

* ``searches failed``: queries whose observation says ``search for "..." failed`` over all queries sent
  (the commonest reasons follow, figures replaced by N);
* ``pages that could not be read``: pages of ``browse_webpage`` calls that came back as an error;
* ``step p50/p95``: wall time of one ``env.step`` over every turn (and of the ``web_search`` turns alone);
* ``episodes/s``: episodes over the wall time of the batch (all in flight at once);
* ``peak RSS``: the process's peak resident set (``ru_maxrss``) after the batch, and of finished children.

``--external`` runs the same batch against ``drgym miniweb serve`` in a child process (the reference the issue
compares with). Figures are wall-clock on a shared machine: compare runs on the same machine only.

    python -m benchmarks.perf.load [--quick] [--episodes 2000] [--corpus demo|wiki-local] [--external]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

import drgym  # noqa: F401  (registers the env ids)
from drgym.agents.scripted import ScriptedAgent

__all__ = ["main"]

_ERROR = 'Error: search for "'
_FAILED = '" failed: '
_PAGE_ERROR = "Error: this page could not be read ("


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _search_outcomes(trajs: Sequence[Any]) -> tuple[int, int, dict[str, int]]:
    """(queries sent, queries failed, failures by message) over every ``web_search`` turn."""
    sent = failed = 0
    reasons: dict[str, int] = {}
    for traj in trajs:
        sent += traj.search_calls
        for turn in traj.turns:
            if turn.tool != "web_search":
                continue
            for line in turn.observation.splitlines():  # each failure renders as 'Error: search for "q" failed: ...'
                if line.lstrip().startswith(_ERROR) and _FAILED in line:
                    failed += 1
                    reason = re.sub(r"\d+(\.\d+)?", "N", line.split(_FAILED, 1)[1])[:90]
                    reasons[reason] = reasons.get(reason, 0) + 1
    return sent, failed, reasons


async def _batch(
    dataset: str, search: str, search_kwargs: dict[str, Any], episodes: int, services: Any
) -> tuple[float, list[Any]]:
    from drgym import arun_episodes

    def make() -> gym.Env:
        return gym.make("drgym/WebResearch-v0", dataset=dataset, search=search, search_kwargs=search_kwargs,
                        services=services)

    pool = [make() for _ in range(episodes)]  # built before the clock starts (each loads the question set)
    n = len(pool[0].unwrapped.records)
    started = time.perf_counter()
    trajs = await arun_episodes(pool.pop, ScriptedAgent, [{"index": i % n} for i in range(episodes)],
                                concurrency=episodes)
    return time.perf_counter() - started, trajs


async def _run(dataset: str, search: str, search_kwargs: dict[str, Any], episodes: int) -> list[tuple[str, float, str]]:
    from drgym.services import ToolServices

    async with ToolServices() as shared:  # one index, one site and one set of sessions for every env
        await _batch(dataset, search, search_kwargs, min(16, episodes), shared)  # warm-up: index, site, sessions
        wall, trajs = await _batch(dataset, search, search_kwargs, episodes, shared)
    sent, failed, reasons = _search_outcomes(trajs)
    pages = sum(t.pages_read for t in trajs)
    page_errors = sum(turn.observation.count(_PAGE_ERROR) for traj in trajs for turn in traj.turns
                      if turn.tool == "browse_webpage")
    steps = [t.step_time_s * 1000 for traj in trajs for t in traj.turns]
    searches = [t.step_time_s * 1000 for traj in trajs for t in traj.turns if t.tool == "web_search"]
    f1 = statistics.fmean(t.f1 for t in trajs) if trajs else float("nan")
    rows = [
        (f"{len(trajs)} episodes at once (mean F1 {f1:.3f}, {sum(t.error is not None for t in trajs)} errors)",
         len(trajs) / wall, "episodes/s"),
        ("  wall", wall, "s"),
        (f"  searches failed ({failed}/{sent})", 100.0 * failed / sent if sent else float("nan"), "%"),
        (f"  pages that could not be read ({page_errors}/{pages + page_errors})",
         100.0 * page_errors / (pages + page_errors) if pages + page_errors else float("nan"), "%"),
        ("  step p50", _percentile(steps, 0.5), "ms"),
        ("  step p95", _percentile(steps, 0.95), "ms"),
        ("  web_search step p95", _percentile(searches, 0.95), "ms"),
        ("  peak RSS (this process)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"),
        ("  peak RSS (largest finished child)", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
         "MiB"),
    ]
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]:
        rows.append((f"  failure: {reason}", count, "searches"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 episodes on the demo corpus")
    parser.add_argument("--episodes", type=int, default=2000, help="episodes in flight at once")
    parser.add_argument("--corpus", default="demo", help="corpus the mini-web serves (demo or wiki-local)")
    parser.add_argument("--search-timeout", type=float, default=20.0,
                        help="limit of one search request, seconds (the mini-web's default)")
    parser.add_argument("--external", action="store_true",
                        help="search an external `drgym miniweb serve` child process instead (the reference)")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes = min(args.episodes, 50)
    dataset = "demo" if args.corpus == "demo" else "hotpotqa-dev500"
    if args.external:
        from .fetch import miniweb

        with miniweb(args.corpus) as base_url:
            label = f"external site ({base_url}, searxng backend)"
            kwargs = {"base_url": base_url, "language": None, "rps": 1000.0, "timeout_s": args.search_timeout}
            rows = asyncio.run(_run(dataset, "searxng", kwargs, args.episodes))
    else:
        label = 'in-process site (search="miniweb")'
        kwargs = {"corpus": args.corpus, "search_timeout_s": args.search_timeout}
        rows = asyncio.run(_run(dataset, "miniweb", kwargs, args.episodes))
    width = max(len(name) for name, _, _ in rows)
    print(f"load: scripted agent, corpus {args.corpus}, {label}, one event loop")
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10.1f}  {unit}")


if __name__ == "__main__":
    main()
