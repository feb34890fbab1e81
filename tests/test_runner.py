"""The episode runners: many concurrent episodes on one loop, JSONL round trips, failures kept per episode."""

from __future__ import annotations

import asyncio
import io
import json

import gymnasium as gym
import pytest

import drgym  # noqa: F401  (registers the env ids)
from drgym.agents.prompt_baseline import PromptAgent
from drgym.agents.scripted import ScriptedAgent
from drgym.data import load_dataset
from drgym.runner import Trajectory, arun_episodes, read_jsonl, run_episode, write_jsonl
from tests.agents.doubles import ScriptedChat, search_then_answer

N_DEMO = 22


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    return {r.question: r.answers[0] for r in load_dataset("demo")}


def _make_env() -> gym.Env:
    return gym.make("drgym/WebResearch-v0", dataset="demo", today="2025-01-15")


async def test_64_episodes_run_concurrently_and_all_come_back_in_order(answers) -> None:
    # Each reply waits 0.5 s: longer than starting all 64 episodes takes (about 1 ms each, more on a busy
    # machine), so every first model call is still in flight when the last episode starts.
    model = ScriptedChat(search_then_answer(answers), delay=0.5)
    agents: list[PromptAgent] = []

    def make_agent() -> PromptAgent:
        agents.append(PromptAgent(llm=model))
        return agents[-1]

    plan = [{"index": i % N_DEMO} for i in range(64)]
    done: list[Trajectory] = []
    trajs = await arun_episodes(_make_env, make_agent, plan, concurrency=64, on_done=done.append)

    assert len(trajs) == 64 and len(done) == 64 and len(agents) == 64
    assert model.max_in_flight == 64  # every episode's model call was in flight at once
    records = load_dataset("demo")
    assert [t.record_id for t in trajs] == [records[i % N_DEMO].id for i in range(64)]
    assert all(t.error is None and t.terminated and t.reward == 1.0 for t in trajs)
    assert all([u.tool for u in t.turns] == ["web_search", None] for t in trajs)
    assert all(t.metadata["agent_stats"]["llm_calls"] == 2 for t in trajs)


async def test_more_episodes_than_workers_reuse_envs_and_agents(answers) -> None:
    made = {"env": 0, "agent": 0}

    def make_env() -> gym.Env:
        made["env"] += 1
        return _make_env()

    def make_agent() -> ScriptedAgent:
        made["agent"] += 1
        return ScriptedAgent()

    trajs = await arun_episodes(make_env, make_agent, 30, concurrency=4, seed=7)
    assert len(trajs) == 30 and made == {"env": 4, "agent": 4}
    again = await arun_episodes(make_env, make_agent, 30, concurrency=3, seed=7)
    assert [t.record_id for t in trajs] == [t.record_id for t in again]  # seeded draws are reproducible


async def test_first_requests_leave_while_later_workers_are_still_being_built(answers) -> None:
    events: list[str] = []

    class NeedsALoopPass(ScriptedChat):
        """A request that leaves one loop pass after it is made (as when its connection is being opened)."""

        async def complete(self, messages, **sampling):
            await asyncio.sleep(0)
            events.append("request")
            return await super().complete(messages, **sampling)

    model = NeedsALoopPass(search_then_answer(answers), delay=0.01)

    def make_env() -> gym.Env:
        events.append("env")
        return _make_env()

    plan = [{"index": i % N_DEMO} for i in range(32)]
    trajs = await arun_episodes(make_env, lambda: PromptAgent(llm=model), plan, concurrency=32)
    assert all(t.error is None and t.reward == 1.0 for t in trajs)
    last_env = len(events) - 1 - events[::-1].index("env")
    assert events.index("request") < last_env  # not every first request held back until all 32 were built


async def test_cancelling_a_batch_stops_and_closes_every_episode(answers) -> None:
    model = ScriptedChat(search_then_answer(answers), delay=30.0)
    made: list[int] = []
    closed: list[int] = []

    class Closing(PromptAgent):
        async def aclose(self) -> None:
            closed.append(id(self))

    def make_agent() -> Closing:
        agent = Closing(llm=model)
        made.append(id(agent))
        return agent

    batch = asyncio.create_task(arun_episodes(_make_env, make_agent, 64, seed=0, concurrency=64))
    for _ in range(500):
        if model.in_flight:
            break
        await asyncio.sleep(0.01)
    batch.cancel()  # most likely while later workers are still starting
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert model.in_flight == 0  # no episode is left running in the background
    assert made and sorted(closed) == sorted(made)


async def test_an_agent_that_raises_fails_only_its_own_episode(answers) -> None:
    bad_question = load_dataset("demo")[3].question

    class Fragile(ScriptedAgent):
        def act(self, observation: str, info: dict) -> str:
            if self._question == bad_question:
                raise RuntimeError("agent bug on this question")
            return super().act(observation, info)

    trajs = await arun_episodes(_make_env, Fragile, [{"index": i} for i in range(N_DEMO)], concurrency=8)
    assert len(trajs) == N_DEMO
    failed = [t for t in trajs if t.error is not None]
    assert [t.question for t in failed] == [bad_question]
    assert failed[0].error == "RuntimeError: agent bug on this question"
    assert all(t.terminated for t in trajs if t.error is None)


async def test_the_runner_closes_the_agents_it_made_even_when_closing_fails() -> None:
    closed: list[int] = []

    class Closing(ScriptedAgent):
        async def aclose(self) -> None:
            closed.append(id(self))
            if len(closed) == 1:
                raise RuntimeError("cleanup failed")

    trajs = await arun_episodes(_make_env, Closing, 6, seed=0, concurrency=3)
    assert len(trajs) == 6 and all(t.error is None for t in trajs)
    assert len(set(closed)) == 3


async def test_bad_reset_options_are_recorded_as_that_episodes_error() -> None:
    plan = [{"index": 0}, {"index": 999}, {"nope": 1}]
    trajs = await arun_episodes(_make_env, ScriptedAgent, plan, concurrency=2)
    assert trajs[0].error is None
    assert trajs[1].error.startswith("ConfigError: reset option `index` must be an int in [0, 22)")
    assert trajs[2].error.startswith("ConfigError: unknown reset option(s) ['nope']")
    assert trajs[2].metadata == {"options": {"nope": 1}}


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        asyncio.run(arun_episodes(_make_env, ScriptedAgent, 1, concurrency=0))


async def test_jsonl_round_trip(tmp_path, answers) -> None:
    model = ScriptedChat(search_then_answer(answers))
    trajs = await arun_episodes(_make_env, lambda: PromptAgent(llm=model), [{"index": i} for i in range(5)])
    path = tmp_path / "runs.jsonl"
    write_jsonl(trajs, path)
    back = read_jsonl(path)
    assert [t.to_dict() for t in back] == [t.to_dict() for t in trajs]
    assert back[0].completion_tokens == trajs[0].completion_tokens > 0
    assert back[0].turns[0].observation.startswith("<tool_response>")


def test_a_torn_last_line_is_skipped(tmp_path) -> None:
    env = _make_env()
    trajs = [run_episode(env, ScriptedAgent(), options={"index": i}) for i in range(3)]
    env.close()
    path = tmp_path / "runs.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        write_jsonl(trajs, fh)
        fh.write(trajs[0].to_json()[:57])  # a crash in the middle of writing the fourth line
    back = read_jsonl(path)
    assert [t.record_id for t in back] == [t.record_id for t in trajs]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[2])["record_id"] == trajs[2].record_id


async def test_trajectories_stream_to_a_file_as_they_finish(tmp_path) -> None:
    stream = io.StringIO()
    await arun_episodes(_make_env, ScriptedAgent, 10, seed=0, concurrency=4,
                        on_done=lambda t: write_jsonl([t], stream))
    path = tmp_path / "stream.jsonl"
    path.write_text(stream.getvalue(), encoding="utf-8")
    assert len(read_jsonl(path)) == 10


def test_run_episode_records_agent_errors_and_stats(answers) -> None:
    env = _make_env()
    model = ScriptedChat(["not a turn", "still not a turn"])
    traj = run_episode(env, PromptAgent(llm=model), options={"index": 0})
    env.close()
    assert traj.error is None and traj.reward == -1.0
    assert traj.metadata["agent_stats"]["format_retries"] == 1


def test_the_batched_runner_benchmark_smoke_runs(capsys) -> None:
    from drgym.benchmarks.perf.runner import main

    main(["--quick", "--no-ceiling"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 50 ms |"))
    assert "| 64/64 | 0 |" in row and "| 32 | 64 |" in row
