"""Batched-runner throughput: many LLM-agent episodes at once against a model server with a fixed delay.

A loopback OpenAI-compatible server (aiohttp, its own process) answers every chat request after a fixed delay
(each of ``--delays`` in turn) with a scripted protocol turn: a ``web_search`` of the question, then the gold
answer.
``PromptAgent`` episodes run through ``drgym.arun_episodes`` with ``--concurrency`` in flight, over the demo
dataset and the local BM25 backend. With every request costing exactly ``delay`` on the server, the best
possible throughput is

    ideal episodes/s = concurrency / (turns per episode x delay)

so ``achieved / ideal`` measures what the client side (runner, env, agent, HTTP client) costs on top. The
client's CPU time per episode bounds it from the other side: one event loop cannot finish more than
``1000 / (CPU ms per episode)`` episodes a second, whatever the server does. A run with no server delay shows
that ceiling directly.

Target: with a loopback LLM server that answers after a fixed delay, 256 concurrent episodes achieve at least
80% of the throughput that the server's delay allows. No particular delay is named; the table reports 1 s,
250 ms and 50 ms. At 50 ms the ideal (2,560 episodes/s) is above the CPU-bound ceiling of one Python client
process, so that row measures the ceiling, not the runner's overhead (``--processes`` splits the batch).

    python -m benchmarks.perf.runner [--quick] [--concurrency 256] [--delays 1,0.25,0.05] [--episodes N]
                                     [--processes P] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import resource
import time
from dataclasses import dataclass
from typing import Any

TURNS = 2  # search, then answer


# --------------------------------------------------------------------------------------------- the server


def _server_main(delay: float, port_out: Any) -> None:
    """Run the scripted model server (in a child process) and report its port through ``port_out``."""
    import json

    from aiohttp import web

    from drgym.data import load_dataset

    answers = {r.question: r.answers[0] for r in load_dataset("demo")}

    def reply(messages: list[dict[str, Any]]) -> str:
        question = next(m["content"] for m in messages if m["role"] == "user")
        if any(m["role"] == "tool" or m["content"].startswith("<tool_response>") for m in messages[2:]):
            answer = answers.get(question, "unknown")
            return f"<think>The results answer it.</think>\n<answer>{answer}</answer>"
        call = json.dumps({"name": "web_search", "arguments": {"query": [question]}})
        return f"<think>I will search for it.</think>\n<tool_call>\n{call}\n</tool_call>"

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        if delay:
            await asyncio.sleep(delay)
        text = reply(body["messages"])
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return web.json_response({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [choice],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        })

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(serve())


class ScriptedServer:
    """The scripted model server in a child process (so it does not compete for the client's event loop)."""

    def __init__(self, delay: float) -> None:
        ctx = mp.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_server_main, args=(delay, send), daemon=True)
        self.process.start()
        deadline = time.monotonic() + 60
        while not receive.poll(0.1):
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.process.kill()
                code = self.process.exitcode
                raise RuntimeError(f"the benchmark's model server did not start (exit code {code})")
        self.url = f"http://127.0.0.1:{receive.recv()}/v1"

    def close(self) -> None:
        self.process.kill()
        self.process.join(5)


# ------------------------------------------------------------------------------------------- the client side


@dataclass
class Result:
    delay: float
    concurrency: int
    episodes: int
    wall_s: float
    cpu_s: float
    correct: int
    errors: int
    act_s: float
    step_s: float
    processes: int = 1

    @property
    def throughput(self) -> float:
        return self.episodes / self.wall_s

    @property
    def ideal(self) -> float | None:
        return self.concurrency / (TURNS * self.delay) if self.delay else None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_batch(url: str, delay: float, concurrency: int, episodes: int, start: Any = None) -> Result:
    """Warm up, then play ``episodes`` with ``concurrency`` in flight (after ``start.wait()``, if given)."""
    import gymnasium as gym

    import drgym
    from drgym.agents.prompt_baseline import PromptAgent
    from drgym.llm.openai import OpenAIChatClient

    client = OpenAIChatClient(url, "bench", max_concurrency=concurrency, timeout=120.0)
    shared = drgym.ToolServices()  # one index for every env of the batch

    def make_env() -> gym.Env:
        return gym.make("drgym/WebResearch-v0", dataset="demo", today="2025-01-15", services=shared)

    def make_agent() -> PromptAgent:
        return PromptAgent(llm=client, temperature=0.0)

    warm = [{"index": i % 22} for i in range(8)]  # builds the index, starts the thread pool and connections
    await drgym.arun_episodes(make_env, make_agent, warm, concurrency=8)
    if start is not None:  # every process begins at once, after its imports and warm-up
        await asyncio.to_thread(start.wait)
    plan = [{"index": i % 22} for i in range(episodes)]
    cpu, started = _cpu_seconds(), time.perf_counter()
    trajs = await drgym.arun_episodes(make_env, make_agent, plan, concurrency=concurrency)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    await client.aclose()
    await shared.aclose()
    return Result(
        delay=delay, concurrency=concurrency, episodes=len(trajs), wall_s=wall, cpu_s=cpu,
        correct=sum(t.reward == 1.0 for t in trajs), errors=sum(t.error is not None for t in trajs),
        act_s=sum(turn.act_time_s for t in trajs for turn in t.turns),
        step_s=sum(turn.step_time_s for t in trajs for turn in t.turns),
    )


def _shard_main(url: str, delay: float, concurrency: int, episodes: int, start: Any, out: Any) -> None:
    out.send(asyncio.run(run_batch(url, delay, concurrency, episodes, start)))


def run_sharded(url: str, delay: float, concurrency: int, episodes: int, processes: int) -> Result:
    """The same batch split over ``processes`` event loops in as many processes (each its own runner)."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(processes)
    shards = []
    for i in range(processes):
        receive, send = ctx.Pipe(duplex=False)
        share = (concurrency // processes + (i < concurrency % processes),
                 episodes // processes + (i < episodes % processes))
        proc = ctx.Process(target=_shard_main, args=(url, delay, *share, start, send), daemon=True)
        proc.start()
        shards.append((proc, receive))
    results: list[Result] = []
    for proc, receive in shards:
        while not receive.poll(0.5):
            if not proc.is_alive():
                raise RuntimeError(f"a benchmark shard process died (exit code {proc.exitcode})")
        results.append(receive.recv())
        proc.join(10)
    return Result(
        delay=delay, concurrency=sum(r.concurrency for r in results),
        episodes=sum(r.episodes for r in results), wall_s=max(r.wall_s for r in results),
        cpu_s=sum(r.cpu_s for r in results),
        correct=sum(r.correct for r in results), errors=sum(r.errors for r in results),
        act_s=sum(r.act_s for r in results), step_s=sum(r.step_s for r in results), processes=processes,
    )


def measure(
    delay: float, concurrency: int, episodes: int, profile: bool = False, processes: int = 1
) -> tuple[Result, str]:
    server = ScriptedServer(delay)
    profiler = cProfile.Profile() if profile else None
    try:
        if processes > 1:
            return run_sharded(server.url, delay, concurrency, episodes, processes), ""
        if profiler is not None:
            profiler.enable()
        result = asyncio.run(run_batch(server.url, delay, concurrency, episodes))
    finally:
        if profiler is not None:
            profiler.disable()
        server.close()
    report = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        report = out.getvalue()
    return result, report


def _row(r: Result) -> str:
    ideal = f"{r.ideal:.0f}" if r.ideal else "-"
    share = f"{100 * r.throughput / r.ideal:.0f}%" if r.ideal else "-"
    cpu_ms = 1000 * r.cpu_s / r.episodes
    return (f"| {1000 * r.delay:.0f} ms | {r.processes} | {r.concurrency} | {r.episodes} | {r.wall_s:.2f} | "
            f"{r.throughput:.0f} | {ideal} | {share} | {cpu_ms:.2f} | {1000 / cpu_ms:.0f} | "
            f"{r.correct}/{r.episodes} | {r.errors} |")


def _delays(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--delays takes seconds, comma-separated, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"--delays takes non-negative seconds, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=256, help="episodes in flight at once")
    parser.add_argument("--delays", type=_delays, default=[1.0, 0.25, 0.05],
                        help="server delays per chat request, seconds, comma-separated (the first is also "
                             "used by --processes and --profile)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes per run (default: 4 x concurrency)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the run without server delay")
    parser.add_argument("--processes", type=int, default=1,
                        help="also run the first delay split over this many processes (one event loop each)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one run at the first delay and print the top functions")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 32 in flight, 64 episodes, 50 ms")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.processes < 1 or (args.episodes is not None and args.episodes < 1):
        parser.error("--concurrency, --processes and --episodes must be positive")
    concurrency = 32 if args.quick else args.concurrency
    episodes = 64 if args.quick else (args.episodes or 4 * concurrency)
    delays = [0.05] if args.quick else args.delays
    if not args.no_ceiling:
        delays = [*delays, 0.0]
    results = [measure(delay, concurrency, episodes)[0] for delay in delays]
    if args.processes > 1:
        results.append(measure(delays[0], concurrency, episodes, processes=args.processes)[0])
    report = measure(delays[0], concurrency, episodes, profile=True)[1] if args.profile else ""

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"batched runner: PromptAgent over HTTP, {TURNS} turns per episode, demo dataset, local BM25; "
          f"{os.cpu_count()} CPUs, load average {load}")
    print("| server delay | processes | in flight | episodes | wall s | episodes/s | ideal/s | of ideal "
          "| client CPU ms/episode | CPU-bound ceiling/s per process | correct | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(_row(result))
    r = results[0]
    print(f"time in flight, summed over turns: agent act (incl. the model call) {r.act_s:.1f} s, "
          f"env step {r.step_s:.1f} s")
    if report:
        print("profile of one more run (the profiler itself slows the run down several times):")
        print(report)


if __name__ == "__main__":
    main()
