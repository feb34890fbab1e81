"""Agents by name on the command line: ``drgym episode --agent NAME --llm SPEC --model NAME``."""

from __future__ import annotations

import asyncio
import json

import pytest

from drgym.cli import main
from drgym.llm.server import create_app


@pytest.mark.parametrize(("agent", "cls"), [("prompt", "PromptAgent"), ("rag", "RAGAgent")])
def test_llm_agents_without_an_llm_say_what_is_missing(agent: str, cls: str, capsys) -> None:
    assert main(["episode", "--agent", agent, "--index", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{cls} needs a language model, but none is configured" in err
    assert f"--agent {agent} --llm openai:http://localhost:8000/v1 --model NAME" in err


def test_the_agents_command_lists_the_baselines(capsys) -> None:
    assert main(["agents"]) == 0
    assert {"prompt", "rag", "scripted"} <= set(capsys.readouterr().out.split())


def test_the_scripted_agent_needs_no_llm(capsys) -> None:
    assert main(["episode", "--agent", "scripted", "--index", "0", "--compact"]) == 0
    traj = json.loads(capsys.readouterr().out)
    assert traj["agent"] == "scripted" and traj["error"] is None and len(traj["turns"]) == 3


@pytest.mark.parametrize(
    ("agent", "extra"),
    [("prompt", ["--agent-arg", "max_tokens=16", "--agent-arg", "few_shot=true", "--max-turns", "2"]),
     ("rag", ["--agent-arg", "max_tokens=16", "--agent-arg", "k=2"])],
    ids=["prompt", "rag"],
)
async def test_llm_agents_play_an_episode_against_a_served_model(
    agent: str, extra: list[str], tiny_lm, serve, capsys
) -> None:
    from drgym.llm.local import TransformersChatClient

    url = await serve(create_app(TransformersChatClient(*tiny_lm, seed=0), "tiny"))
    argv = ["episode", "--agent", agent, "--llm", f"openai:{url}", "--model", "tiny", "--index", "0",
            "--compact", *extra]
    # the command is synchronous (its own background loop); the server runs on this test's loop
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    traj = json.loads(out)
    assert traj["agent"] == agent and traj["error"] is None
    assert traj["terminated"] or traj["truncated"]
    assert traj["turns"] and all(t["prompt_tokens"] > 0 and t["completion_tokens"] > 0 for t in traj["turns"])


def test_a_wrong_llm_spec_is_a_clear_error(capsys) -> None:
    assert main(["episode", "--agent", "prompt", "--llm", "http://localhost:8000/v1"]) == 2
    assert "Did you mean: 'openai:http://localhost:8000/v1'?" in capsys.readouterr().err
