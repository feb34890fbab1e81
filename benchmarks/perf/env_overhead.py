"""Env overhead: steps per second of the scripted agent over the local backend, and the env's own share.

The env's own time is each ``step``'s wall time minus the time spent inside the search backend and the page
reader (``env.unwrapped.backend_time_s``), also shown per kind of turn (search, browse, answer). Target: the
env adds under 10% on top of the backend's own time.

    python -m benchmarks.perf.env_overhead [--quick] [--dataset hotpotqa-dev500] [--episodes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import gymnasium as gym

import drgym
from drgym.agents.scripted import ScriptedAgent


def measure(dataset: str, episodes: int, *, use_async: bool = False, search: str = "local") -> dict[str, float]:
    """Play ``episodes`` one after another; with ``use_async`` through ``astep`` on this thread's loop."""
    env = gym.make("drgym/WebResearch-v0", dataset=dataset, search=search)  # it owns its services
    base = env.unwrapped
    if use_async:
        loop = asyncio.new_event_loop()

        def step(action: str):
            return loop.run_until_complete(base.astep(action))
    else:
        step = env.step
    n = len(base.records)
    # warm the index and the background loop
    env.reset(options={"index": 0})
    step('<think>w</think><tool_call>{"name": "web_search", "arguments": {"query": ["warm"]}}</tool_call>')
    steps = 0
    step_time = backend_time = 0.0
    per_kind: dict[str, list[float]] = {}  # turn kind -> [steps, step seconds, backend seconds]
    started = time.perf_counter()
    for i in range(episodes):
        agent = ScriptedAgent()
        obs, info = env.reset(options={"index": i % n})
        agent.reset(obs, info)
        done = False
        while not done:
            action = agent.act(obs, info)
            before = base.backend_time_s
            t0 = time.perf_counter()
            obs, _, term, trunc, info = step(action)
            took, in_backend = time.perf_counter() - t0, base.backend_time_s - before
            step_time += took
            backend_time += in_backend
            steps += 1
            kind = info["action"]["tool"] or info["action"]["kind"]
            row = per_kind.setdefault(kind, [0, 0.0, 0.0])
            row[0] += 1
            row[1] += took
            row[2] += in_backend
            done = term or trunc
    wall = time.perf_counter() - started
    # sessions and servers opened by this phase end with its loop
    if use_async:
        loop.run_until_complete(base.aclose())
        loop.close()
    env.close()
    return {
        "episodes": episodes,
        "steps": steps,
        "steps_per_s": steps / wall,
        "step_ms": 1000 * step_time / steps,
        "backend_ms": 1000 * backend_time / steps,
        "env_overhead_pct": 100 * (step_time - backend_time) / backend_time,
        "env_us_by_kind": {k: 1e6 * (t - b) / n for k, (n, t, b) in per_kind.items()},
        "backend_us_by_kind": {k: 1e6 * b / n for k, (n, t, b) in per_kind.items()},
    }


async def _measure_async(dataset: str, episodes: int, concurrency: int, search: str) -> dict[str, float]:
    async with drgym.ToolServices() as shared:  # one index and one set of sessions for every env

        def make_env() -> gym.Env:
            return gym.make("drgym/WebResearch-v0", dataset=dataset, search=search, services=shared)

        # warm-up: the shared backend (index, sessions) is built once, untimed
        await drgym.arun_episodes(make_env, ScriptedAgent, episodes=concurrency, seed=1, concurrency=concurrency)
        started = time.perf_counter()
        trajs = await drgym.arun_episodes(
            make_env, ScriptedAgent, episodes=episodes, seed=0, concurrency=concurrency
        )
        wall = time.perf_counter() - started
    steps = sum(len(t.turns) for t in trajs)
    return {"episodes": episodes, "steps": steps, "steps_per_s": steps / wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="hotpotqa-dev500")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--search", default="local", help="backend: local (in-memory BM25) or miniweb (HTTP)")
    parser.add_argument("--quick", action="store_true", help="a few episodes on the demo set")
    args = parser.parse_args(argv)
    dataset, episodes = ("demo", 10) if args.quick else (args.dataset, args.episodes)
    sync = measure(dataset, episodes, search=args.search)
    seq = measure(dataset, episodes, use_async=True, search=args.search)
    conc = asyncio.run(_measure_async(dataset, episodes, concurrency=16, search=args.search))
    print(f"env overhead on {dataset} over {args.search} ({episodes} scripted episodes)")
    print("| mode | steps | steps/s | step ms | backend ms | env overhead |")
    print("|---|---|---|---|---|---|")
    print(f"| sync | {sync['steps']} | {sync['steps_per_s']:.1f} | {sync['step_ms']:.2f} | "
          f"{sync['backend_ms']:.2f} | {sync['env_overhead_pct']:.1f}% |")
    print(f"| async, one at a time | {seq['steps']} | {seq['steps_per_s']:.1f} | {seq['step_ms']:.2f} | "
          f"{seq['backend_ms']:.2f} | {seq['env_overhead_pct']:.1f}% |")
    print(f"| async x16 | {conc['steps']} | {conc['steps_per_s']:.1f} | | | |")
    print("\nper turn kind (sync): the env's own cost and the backend's, in microseconds per step")
    print("| turn | env µs | backend µs |")
    print("|---|---|---|")
    for kind, env_us in sync["env_us_by_kind"].items():
        print(f"| {kind} | {env_us:.0f} | {sync['backend_us_by_kind'][kind]:.0f} |")


if __name__ == "__main__":
    main()
