"""Many concurrent episodes through one ``drgym serve`` gateway, against the same episodes run in-process.

The upstream is the mini-web (the demo corpus served on loopback, in a process of its own, as the web would be)
with 200 ms of latency on every request and 10% of requests faulted (429 with Retry-After, 503, connection
reset). Searches go through the SearxNG client to the site's SearxNG API and pages through the SSRF-guarded
fetcher (the site's address allow-listed) and the extractor. Scripted-agent episodes (a search, then reading
the results' pages) run through ``drgym.arun_episodes`` in ``--clients`` processes, all ``--episodes`` in
flight at once:

* **gateway**: the search stack, fetcher and reader live in one gateway process (its extraction pool as many
  processes as the clients' pools together); each client process shares one ``GatewayBackend`` (searches,
  page opens and page reads go through the gateway);
* **in-process**: the same episodes, each client process with the same stack of its own (no gateway).

Reported: episodes/s, tool-call p50/p95 (a ``step`` that ran a tool, seen by the client; also per tool), peak
RSS of the gateway and of the clients, trajectories returned and with an error, error observations by kind
(message with URLs, quotes and numbers masked, so a kind nobody expected still shows), CPU seconds by process,
what the gateway's ``/metrics`` says (queue waits, event-loop lag, server-side time), and the gateway's cost
per tool call as ratios to the in-process run of the same process count: latency (p50, p95) and CPU seconds per
tool call (all processes, extraction workers included). CPU counts the gateway and the clients while the
episodes run (not start-up, not the site, which is the same in both runs). Drip faults are left out: they
measure the clients' timeouts, not the gateway.

    python -m benchmarks.perf.gateway [--quick] [--episodes 4096] [--clients 2] [--modes gateway,in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import re
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

FAULTS = {"latency_ms": 200.0, "fault_rate": 0.10, "kinds": ("429", "503", "reset"), "seed": 0, "retry_after_s": 1.0}


_ERROR_LINE = re.compile(r"Error: (?:this page could not be read \()?(.*)$", re.MULTILINE)
_NORMALISE = ((re.compile(r"https?://\S+"), "URL"), (re.compile(r'"[^"]*"'), '"Q"'),
              (re.compile(r"\d+(?:\.\d+)?"), "N"))


def error_kinds(observation: str) -> list[str]:
    """The kind of each error in a tool observation: its message with URLs, quoted text and numbers masked.

    A browse observation holds one error per page that could not be read; a search observation one per failed
    query. Masking keeps kinds few (``search for "Q" failed: ... HTTP N ...``) without a hand-made list that
    would hide a kind nobody expected.
    """
    kinds = []
    for match in _ERROR_LINE.finditer(observation):
        text = match.group(1).rstrip(").")
        for pattern, mask in _NORMALISE:
            text = pattern.sub(mask, text)
        kinds.append(text[:110])
    return kinds


def _pool_cpu_s(pool: Any) -> float:
    """CPU seconds the extraction pool's live worker processes have used (Linux ``/proc``; 0 elsewhere)."""
    import os

    total = 0.0
    for pid in pool.pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _upstream(site_url: str, extract_workers: int = 2) -> Any:
    """The live path to the site: SearxNG client and page opener, limits wide enough not to be the bottleneck.

    ``extract_workers``: processes of the opener's extraction pool (the gateway gets as many as all the
    in-process clients together, so both runs have the same number of extraction processes)."""
    from drgym.ratelimit import TokenBucket
    from drgym.search.searxng import SearxngBackend
    from drgym.web.fetch import FetchConfig
    from drgym.web.isolation import IsolatedPool
    from drgym.web.opener import PageOpener

    fetch = FetchConfig(
        allow_hosts=frozenset({"127.0.0.1"}), per_host_rate=None, max_redirects=0, max_connections=1024,
        max_connections_per_host=1024,
    )
    return SearxngBackend(
        base_url=site_url, language=None, limiter=TokenBucket(100_000.0), connector_limit=1024,
        page_opener=PageOpener(config=fetch, pool=IsolatedPool(extract_workers)),
    )


def _site_main(corpus: str, conn: Any) -> None:
    """The mini-web with latency and faults, in its own process."""
    from drgym.miniweb import FaultConfig, serve

    asyncio.run(serve(corpus, port=0, faults=FaultConfig(**FAULTS), on_ready=lambda url, _: conn.send(url)))


# ------------------------------------------------------------------------------------------------ processes


def _gateway_main(site_url: str, extract_workers: int, conn: Any) -> None:
    """The gateway process: serve until told to stop, then report its peak RSS and the CPU time it spent
    between the parent's "mark" (the clients start) and "stop"."""
    from drgym.gateway.server import serve
    from drgym.gateway.services import GatewayConfig, GatewayServices

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        backend = _upstream(site_url, extract_workers)
        services = GatewayServices(GatewayConfig(search=backend))

        def commands() -> None:
            while conn.recv() != "stop":  # "mark"
                marks.append(_cpu_s())
            marks.append(_cpu_s())

        waiter = loop.run_in_executor(None, commands)
        waiter.add_done_callback(lambda _: stop.set())
        try:
            await serve(services, port=0, stop=stop, on_ready=conn.send, shutdown_timeout_s=10)
        finally:
            extract_cpu.append(_pool_cpu_s(backend.page_opener.pool))
            await backend.page_opener.aclose()
            backend.page_opener.pool.close()

    marks: list[float] = []
    extract_cpu: list[float] = []
    asyncio.run(main())
    conn.send({"rss_mb": _rss_mb(), "cpu_s": marks[-1] - marks[0], "extract_cpu_s": sum(extract_cpu)})


def _client_main(url: str | None, site_url: str, episodes: int, seed: int, conn: Any) -> None:
    """One client process: ``episodes`` episodes at once, through the gateway at ``url`` or in-process."""
    import gymnasium as gym

    import drgym
    from drgym.agents.scripted import ScriptedAgent
    from drgym.gateway.client import GatewayBackend

    async def main() -> dict[str, Any]:
        backend: Any = GatewayBackend(url) if url else _upstream(site_url)
        conn.send("ready")
        conn.recv()  # every client starts together
        started, cpu_started = time.perf_counter(), _cpu_s()
        try:
            trajectories = await drgym.arun_episodes(
                lambda: gym.make("drgym/WebResearch-v0", dataset="demo", search=backend),
                ScriptedAgent, episodes=episodes, seed=seed, concurrency=episodes,
            )
        finally:
            extract_cpu = 0.0 if url else _pool_cpu_s(backend.page_opener.pool)
            await backend.aclose()
            if not url:
                await backend.page_opener.aclose()
                backend.page_opener.pool.close()
        wall, cpu = time.perf_counter() - started, _cpu_s() - cpu_started
        tools = [turn for t in trajectories for turn in t.turns if turn.tool is not None]
        kinds = collections.Counter(kind for turn in tools for kind in error_kinds(turn.observation))
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "extract_cpu_s": extract_cpu,
            "episodes": len(trajectories),
            "errors": sum(t.error is not None for t in trajectories),
            "tool_times": [turn.step_time_s for turn in tools],
            "tool_times_by_name": {
                name: [turn.step_time_s for turn in tools if turn.tool == name] for name in {t.tool for t in tools}
            },
            "tool_errors": sum(1 for turn in tools if "Error:" in turn.observation),
            "gateway_errors": sum(1 for turn in tools if "gateway " in turn.observation),
            "error_kinds": dict(kinds),
        }

    stats = asyncio.run(main())
    stats.update(rss_mb=_rss_mb())
    conn.send(stats)


@dataclass
class Run:
    mode: str
    episodes: int
    returned: int
    errors: int
    wall_s: float
    tool_calls: int
    tool_errors: int
    gateway_errors: int
    p50_s: float
    p95_s: float
    cpu_s: float
    client_rss_mb: float
    gateway_rss_mb: float | None
    error_kinds: dict[str, int]
    cpu_by_process: dict[str, float]
    by_tool: dict[str, tuple[int, float, float]]
    gateway_figures: dict[str, float]

    @property
    def episodes_per_s(self) -> float:
        return self.returned / self.wall_s

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu_s / max(1, self.tool_calls)


def _spawn(ctx: Any, target: Any, *args: Any) -> tuple[Any, Any]:
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    return process, parent


def _recv(conn: Any, process: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not conn.poll(0.2):
        if not process.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"a benchmark process stopped answering (exit code {process.exitcode})")
    return conn.recv()


def run(mode: str, episodes: int, clients: int, site_url: str, timeout_s: float) -> Run:
    """One measured run: ``episodes`` split over ``clients`` processes, through a gateway or in-process."""
    ctx = mp.get_context("spawn")
    gateway = url = None
    if mode == "gateway":
        gateway = _spawn(ctx, _gateway_main, site_url, 2 * clients)
        url = _recv(gateway[1], gateway[0], 120)
    shares = [episodes // clients + (i < episodes % clients) for i in range(clients)]
    workers = [_spawn(ctx, _client_main, url, site_url, n, 1000 * i) for i, n in enumerate(shares)]
    try:
        for process, conn in workers:
            assert _recv(conn, process, 120) == "ready"
        if gateway is not None:
            gateway[1].send("mark")
        for _, conn in workers:
            conn.send("go")
        results = [_recv(conn, process, timeout_s) for process, conn in workers]
        gateway_stats = None
        figures: dict[str, float] = {}
        if gateway is not None:
            figures = _gateway_figures(url)
            gateway[1].send("stop")
            gateway_stats = _recv(gateway[1], gateway[0], 60)
    finally:
        for process, _ in workers + ([gateway] if gateway else []):
            process.join(10)
            if process.is_alive():
                process.kill()
    times = sorted(t for r in results for t in r["tool_times"])
    cpu = sum(r["cpu_s"] + r["extract_cpu_s"] for r in results) + (
        gateway_stats["cpu_s"] + gateway_stats["extract_cpu_s"] if gateway_stats else 0.0
    )
    kinds: collections.Counter[str] = collections.Counter()
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for r in results:
        kinds.update(r["error_kinds"])
        for name, values in r["tool_times_by_name"].items():
            by_name[name].extend(values)
    return Run(
        mode=mode,
        episodes=episodes,
        returned=sum(r["episodes"] for r in results),
        errors=sum(r["errors"] for r in results),
        wall_s=max(r["wall_s"] for r in results),
        tool_calls=len(times),
        tool_errors=sum(r["tool_errors"] for r in results),
        gateway_errors=sum(r["gateway_errors"] for r in results),
        p50_s=statistics.median(times) if times else float("nan"),
        p95_s=times[int(0.95 * (len(times) - 1))] if times else float("nan"),
        cpu_s=cpu,
        client_rss_mb=max(r["rss_mb"] for r in results),
        gateway_rss_mb=gateway_stats["rss_mb"] if gateway_stats else None,
        error_kinds=dict(kinds),
        cpu_by_process={
            **{f"client {i}": r["cpu_s"] for i, r in enumerate(results)},
            **({f"client {i} extraction": r["extract_cpu_s"] for i, r in enumerate(results)} if not gateway_stats
               else {"gateway": gateway_stats["cpu_s"], "gateway extraction": gateway_stats["extract_cpu_s"]}),
        },
        by_tool={name: (len(v), *_p50_p95(sorted(v))) for name, v in sorted(by_name.items())},
        gateway_figures=figures,
    )


def _p50_p95(ordered: list[float]) -> tuple[float, float]:
    if not ordered:
        return float("nan"), float("nan")
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def _gateway_figures(url: str) -> dict[str, float]:
    """What the gateway's own ``/metrics`` says: server-side time per endpoint, event-loop lag, errors."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=60) as resp:
        text = resp.read().decode()
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if sample.name.endswith("_bucket") or sample.name.endswith("_created"):
                continue
            figures[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 episodes (a smoke run)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes in flight at once (default 4096)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--corpus", default="demo", help="corpus the mini-web serves")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a run may take")
    parser.add_argument("--modes", default="gateway,in-process",
                        help="runs to make, comma-separated (gateway, in-process); the ratios need both")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"gateway", "in-process"})
    if unknown or not modes:
        parser.error(f"--modes: unknown {', '.join(unknown) or '(none given)'}; valid: gateway, in-process")
    episodes = args.episodes or (128 if args.quick else 4096)
    ctx = mp.get_context("spawn")
    site, site_conn = _spawn(ctx, _site_main, args.corpus)
    try:
        site_url = _recv(site_conn, site, 120)
        runs = [run(mode, episodes, args.clients, site_url, args.timeout) for mode in modes]
    finally:
        site.kill()
        site.join(10)
    print(f"\n{episodes} concurrent episodes, {args.clients} client processes, mini-web {args.corpus!r}: "
          f"{FAULTS['latency_ms']:g} ms latency, {FAULTS['fault_rate']:.0%} faults ({', '.join(FAULTS['kinds'])})")
    print("| mode | returned | with error | episodes/s | tool calls | with an error (gateway's) | p50 s | p95 s | "
          "CPU ms/call | client peak RSS MB | gateway peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        gw = f"{r.gateway_rss_mb:.0f}" if r.gateway_rss_mb is not None else "-"
        print(f"| {r.mode} | {r.returned}/{r.episodes} | {r.errors} | {r.episodes_per_s:.1f} | {r.tool_calls} | "
              f"{r.tool_errors} ({r.gateway_errors}) | {r.p50_s:.3f} | {r.p95_s:.3f} | {r.cpu_ms_per_call:.2f} | "
              f"{r.client_rss_mb:.0f} | {gw} |")
    print("\n| mode | tool | calls | p50 s | p95 s |\n|---|---|---|---|---|")
    for r in runs:
        for name, (count, p50, p95) in r.by_tool.items():
            print(f"| {r.mode} | {name} | {count} | {p50:.3f} | {p95:.3f} |")
    _print_error_kinds(runs)
    print("\nCPU seconds by process while the episodes ran (extraction: the pool's workers over their whole life):")
    for r in runs:
        shares = ", ".join(f"{name} {cpu:.1f}" for name, cpu in r.cpu_by_process.items())
        print(f"  {r.mode} ({r.wall_s:.1f} s wall): {shares}")
    for r in runs:
        if r.gateway_figures:
            print(f"\ngateway /metrics after the {r.mode} run:")
            for name, value in sorted(r.gateway_figures.items()):
                if value and not name.startswith(("python_", "process_")):
                    print(f"  {name} {value:g}")
    if len(runs) == 2:
        through, local = runs
        print(f"\ngateway / in-process: tool-call p50 x{through.p50_s / local.p50_s:.2f}, p95 "
              f"x{through.p95_s / local.p95_s:.2f}, CPU per tool call "
              f"x{through.cpu_ms_per_call / local.cpu_ms_per_call:.2f}, episodes/s "
              f"x{through.episodes_per_s / local.episodes_per_s:.2f}")
    missing = [r.mode for r in runs if r.returned != r.episodes]
    if missing:
        print(f"trajectories missing in: {', '.join(missing)}")
        return 1
    return 0


def _print_error_kinds(runs: list[Run]) -> None:
    """Error observations by kind, one column per mode, each with its share of that mode's tool calls."""
    kinds = sorted({k for r in runs for k in r.error_kinds}, key=lambda k: -sum(r.error_kinds.get(k, 0) for r in runs))
    print("\nerror observations by kind (a browse call has one per page that failed; share: of tool calls)")
    print("| kind | " + " | ".join(r.mode for r in runs) + " |\n|---|" + "---|" * len(runs))
    for kind in kinds:
        cells = [f"{r.error_kinds.get(kind, 0)} ({r.error_kinds.get(kind, 0) / max(1, r.tool_calls):.1%})" for r in runs]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    totals = [f"{sum(r.error_kinds.values())} ({sum(r.error_kinds.values()) / max(1, r.tool_calls):.1%})" for r in runs]
    print("| all | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
