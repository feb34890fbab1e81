"""The trained policy as an agent: by name, from a checkpoint, through the CLI."""

from __future__ import annotations

import json

import gymnasium
import pytest

import drgym  # noqa: F401
from drgym.agent import make_agent
from drgym.agents.grpo.agent import GRPOAgent
from drgym.agents.grpo.train import train
from drgym.cli import main as drgym_main
from drgym.data.synthetic import make_synthetic_task
from drgym.errors import ConfigError
from drgym.runner import run_episode
from drgym.search.local import BM25Backend
from tests.grpo.conftest import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpo-agent")
    train(tiny_config(tmp, max_steps=2, save_steps=1, max_turn_tokens=8, max_completion_length=64))
    return tmp / "run"


def test_agent_by_name_plays_an_episode_from_a_run_directory(run_dir):
    agent = make_agent("grpo", checkpoint=str(run_dir), max_new_tokens=8)
    assert isinstance(agent, GRPOAgent) and agent.checkpoint == run_dir  # the run's final save
    records, passages = make_synthetic_task(3, seed=1)
    env = gymnasium.make(
        "drgym/WebResearch-v0",
        dataset=records,
        search=BM25Backend(passages, corpus="synthetic", cache=False),
        **agent.env_options,
    )
    traj = run_episode(env, agent, options={"index": 0})
    env.close()
    assert traj.error is None and traj.turns
    assert traj.turns[0].completion_tokens <= 8
    # It writes with the training system prompt, not the env's.
    assert (
        agent._messages({"messages": [{"role": "system", "content": "x"}]})[0]["content"]
        == "Search, then answer."
    )


def test_agent_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        GRPOAgent()
    with pytest.raises(ConfigError, match="is neither a saved model with its config.yaml"):
        GRPOAgent(checkpoint=tmp_path)


def test_agent_resolves_a_run_directory_to_its_final_save_or_newest_checkpoint(run_dir, tmp_path):
    import shutil

    from drgym.agents.grpo.checkpoint import load_model, resolve_checkpoint

    assert resolve_checkpoint(run_dir) == run_dir
    assert resolve_checkpoint(run_dir / "checkpoint-1") == run_dir / "checkpoint-1"
    unfinished = tmp_path / "unfinished"  # a run stopped before its final save
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(run_dir / name, unfinished / name)
    assert resolve_checkpoint(unfinished) == unfinished / "checkpoint-2"
    final, _ = load_model(run_dir)
    last, _ = load_model(run_dir / "checkpoint-2")
    assert all(a.equal(b) for a, b in zip(final.parameters(), last.parameters()))  # the final save is step 2


def test_drgym_episode_cli_with_the_grpo_agent(run_dir, capsys):
    code = drgym_main(
        [
            "episode",
            "--agent",
            "grpo",
            "--checkpoint",
            str(run_dir / "checkpoint-1"),
            "--agent-arg",
            "max_new_tokens=6",
            "--index",
            "0",
            "--compact",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["agent"] == "grpo" and out["turns"]
