"""Play episodes: one at a time, or many at once on one event loop, recording full trajectories.

``run_episode(env, agent)`` is the plain synchronous loop. ``arun_episodes`` plays many episodes concurrently
on the caller's loop with a concurrency limit: each in-flight episode uses its own env and agent (an env holds
one episode's state); give ``make_env`` one :class:`~drgym.services.ToolServices` for all of them (``services=``)
to share search stacks, limits, budgets and HTTP sessions, and close it after the batch. A failing agent or env
never kills the batch: that episode's trajectory records the error and the batch goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import gymnasium as gym

from drgym.agent import Agent

__all__ = ["Trajectory", "TurnRecord", "arun_episode", "arun_episodes", "read_jsonl", "run_episode", "write_jsonl"]

logger = logging.getLogger(__name__)


@dataclass
class TurnRecord:
    """One policy turn and what the env answered."""

    index: int
    action: str
    observation: str
    reward: float
    tool: str | None
    arguments: dict[str, Any] | None
    format_ok: bool
    error: str | None
    act_time_s: float
    step_time_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Trajectory:
    """A whole episode, serialisable to one JSON line."""

    agent: str
    record_id: str
    source: str
    question: str
    answers: list[str]
    turns: list[TurnRecord] = field(default_factory=list)
    reward: float = 0.0
    f1: float = 0.0
    em: float = 0.0
    answer: str | None = None
    terminated: bool = False
    truncated: bool = False
    tool_calls: int = 0
    search_calls: int = 0
    pages_read: int = 0
    wall_time_s: float = 0.0
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int | None:
        counts = [t.completion_tokens for t in self.turns if t.completion_tokens is not None]
        return sum(counts) if counts else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        turns = [TurnRecord(**t) for t in data.get("turns", [])]
        return cls(**{**data, "turns": turns})


def _unwrapped(env: gym.Env) -> Any:
    return env.unwrapped


def _new_trajectory(agent: Agent, info: dict[str, Any], options: dict[str, Any] | None) -> Trajectory:
    return Trajectory(
        agent=getattr(agent, "name", type(agent).__name__),
        record_id=str(info.get("record_id", "")),
        source=str(info.get("source", "")),
        question=str(info.get("question", "")),
        answers=[],
        metadata={"options": options or {}},
    )


def _record_agent_stats(traj: Trajectory, agent: Agent) -> None:
    """Keep an agent's own per-episode counters (``episode_stats``: model calls, repairs, failures)."""
    stats = getattr(agent, "episode_stats", None)
    if isinstance(stats, dict) and stats:
        traj.metadata["agent_stats"] = dict(stats)


async def _close_env(env: gym.Env) -> None:
    """Close an env, awaiting what it releases on this loop when it can (a drgym env's ``aclose``)."""
    from drgym.env import WebResearchEnv

    base = _unwrapped(env)
    if isinstance(base, WebResearchEnv):
        await base.aclose()
    env.close()


async def _close_agent(agent: Agent) -> None:
    """Release what an agent holds (e.g. its share of an HTTP client), if it has an ``aclose``."""
    close = getattr(agent, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception as exc:  # noqa: BLE001  # a failed cleanup must not fail the finished batch
            logger.warning("closing agent %s failed: %s: %s", getattr(agent, "name", "?"),
                           type(exc).__name__, exc)


def _record_turn(traj: Trajectory, agent: Agent, action: str, step: tuple, act_s: float, step_s: float) -> None:
    observation, reward, terminated, truncated, info = step
    parsed = info.get("action") or {}
    usage = getattr(agent, "last_usage", None) or {}
    traj.turns.append(
        TurnRecord(
            index=len(traj.turns),
            action=action,
            observation=observation,
            reward=float(reward),
            tool=parsed.get("tool"),
            arguments=parsed.get("arguments"),
            format_ok=bool(info.get("format_ok", False)),
            error=info.get("error"),
            act_time_s=act_s,
            step_time_s=step_s,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
    )
    traj.tool_calls = int(info.get("tool_calls", 0))
    traj.search_calls = int(info.get("search_calls", 0))
    traj.pages_read = int(info.get("pages_read", 0))
    if terminated or truncated:
        traj.terminated, traj.truncated = bool(terminated), bool(truncated)
        traj.reward = float(reward)
        traj.f1 = float(info.get("f1", 0.0))
        traj.em = float(info.get("em", 0.0))
        traj.answer = info.get("answer")
        traj.answers = list(info.get("answers", []))


@contextmanager
def _episode_errors_recorded(traj: Trajectory) -> Iterator[None]:
    """An agent or env bug ends this episode only: the error goes into the trajectory, not up the stack."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (any bug of one episode must not end the batch)
        traj.error = f"{type(exc).__name__}: {exc}"
        logger.warning("episode %s failed: %s", traj.record_id, traj.error)
        logger.debug("%s", traceback.format_exc())


def run_episode(
    env: gym.Env, agent: Agent, *, seed: int | None = None, options: dict[str, Any] | None = None
) -> Trajectory:
    """Play one episode synchronously and return its trajectory (agent errors are recorded, not raised)."""
    started = time.perf_counter()
    observation, info = env.reset(seed=seed, options=options)
    traj = _new_trajectory(agent, info, options)
    with _episode_errors_recorded(traj):
        agent.reset(observation, info)
        done = False
        while not done:
            t0 = time.perf_counter()
            action = agent.act(observation, info)
            t1 = time.perf_counter()
            step = env.step(action)
            _record_turn(traj, agent, action, step, t1 - t0, time.perf_counter() - t1)
            observation, _, terminated, truncated, info = step
            done = terminated or truncated
    _record_agent_stats(traj, agent)
    traj.wall_time_s = time.perf_counter() - started
    return traj


async def arun_episode(
    env: gym.Env, agent: Agent, *, seed: int | None = None, options: dict[str, Any] | None = None
) -> Trajectory:
    """Play one episode on the running loop (``env.unwrapped.astep`` and ``agent.aact``)."""
    started = time.perf_counter()
    base = _unwrapped(env)
    observation, info = await base.areset(seed=seed, options=options)
    traj = _new_trajectory(agent, info, options)
    with _episode_errors_recorded(traj):
        agent.reset(observation, info)
        done = False
        while not done:
            t0 = time.perf_counter()
            action = await agent.aact(observation, info)
            t1 = time.perf_counter()
            step = await base.astep(action)
            _record_turn(traj, agent, action, step, t1 - t0, time.perf_counter() - t1)
            observation, _, terminated, truncated, info = step
            done = terminated or truncated
    _record_agent_stats(traj, agent)
    traj.wall_time_s = time.perf_counter() - started
    return traj


async def arun_episodes(
    make_env: Callable[[], gym.Env],
    make_agent: Callable[[], Agent],
    episodes: Sequence[dict[str, Any] | None] | int,
    *,
    concurrency: int = 32,
    seed: int | None = None,
    on_done: Callable[[Trajectory], Awaitable[None] | None] | None = None,
) -> list[Trajectory]:
    """Play many episodes concurrently on the running loop; results come back in the order of ``episodes``.

    Cancelling the call, or an exception from ``make_env``/``make_agent``, stops every episode in flight and
    closes their envs and agents before it propagates.

    Args:
        make_env: builds one env (called at most ``concurrency`` times; envs are reused between episodes).
        make_agent: builds one agent (same reuse).
        episodes: reset options per episode (``{"index": i}``...) or a count of seeded draws.
        concurrency: episodes in flight at once.
        seed: with a count, episode ``i`` resets with ``seed + i``.
        on_done: called with each finished trajectory (e.g. to append it to a JSONL file as it completes).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    plan: list[tuple[dict[str, Any] | None, int | None]]
    if isinstance(episodes, int):
        plan = [(None, None if seed is None else seed + i) for i in range(episodes)]
    else:
        plan = [(opts, None) for opts in episodes]
    results: list[Trajectory | None] = [None] * len(plan)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)

    async def worker() -> None:
        env, agent = make_env(), make_agent()
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                options, episode_seed = plan[i]
                try:
                    traj = await arun_episode(env, agent, seed=episode_seed, options=options)
                except Exception as exc:  # noqa: BLE001  (reset itself failed, e.g. bad options: record, go on)
                    traj = Trajectory(agent=getattr(agent, "name", "agent"), record_id="", source="",
                                      question="", answers=[], error=f"{type(exc).__name__}: {exc}",
                                      metadata={"options": options or {}})
                results[i] = traj
                if on_done is not None:
                    maybe = on_done(traj)
                    if asyncio.iscoroutine(maybe):
                        await maybe
        finally:
            await _close_env(env)
            await _close_agent(agent)

    # Workers start one per loop pass: each builds its env and sends its first request (opening a connection
    # takes a pass) while the next is being built, instead of every first request waiting until all workers
    # are built, and all replies, one model delay later, arriving in one burst.
    tasks: list[asyncio.Task[None]] = []
    try:
        for _ in range(min(concurrency, len(plan))):
            tasks.append(asyncio.create_task(worker()))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
    except BaseException:  # cancelled, or a worker could not build its env or agent: stop the others too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their envs and agents are closed on return
        raise
    return [r for r in results if r is not None]


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path | IO[str]) -> None:
    """Write trajectories as JSON lines (a path is overwritten; an open file is appended to)."""
    if isinstance(path, (str, Path)):
        with open(path, "w", encoding="utf-8") as fh:
            write_jsonl(trajectories, fh)
        return
    for traj in trajectories:
        path.write(traj.to_json() + "\n")


def read_jsonl(path: str | Path) -> list[Trajectory]:
    """Read trajectories written by ``write_jsonl``; a torn last line (a crash mid-write) is skipped."""
    out: list[Trajectory] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(Trajectory.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                logger.warning("skipping an unreadable line in %s", path)
    return out
