"""Agents and extra CLI commands are found through entry points; the core names none of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from drgym.agent import agent_class, agent_names, make_agent
from drgym.agents.scripted import ScriptedAgent
from drgym.cli import main as drgym_main
from drgym.errors import ConfigError
from tests.benchmarks.bench_agents import CrashyAgent
from tests.plugins import register_entry_points


def test_the_shipped_agents_are_entry_points_each_once() -> None:
    names = agent_names()
    assert {"scripted", "prompt", "rag", "grpo"} <= set(names) and len(names) == len(set(names))
    assert agent_class("scripted") is ScriptedAgent


def test_another_package_registers_an_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    register_entry_points(monkeypatch, tmp_path, "drgym.agents", {"crashy": "tests.benchmarks.bench_agents:CrashyAgent"})
    assert "crashy" in agent_names()
    assert isinstance(make_agent("crashy", crash_on=["x"]), CrashyAgent)


def test_an_import_path_names_an_agent_that_is_not_installed() -> None:
    assert type(make_agent("tests.benchmarks.bench_agents:CrashyAgent")) is CrashyAgent
    with pytest.raises(ConfigError, match="cannot be imported"):
        make_agent("tests.benchmarks.bench_agents:NoSuchAgent")


def test_an_unknown_agent_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean `scripted`"):
        make_agent("scriptd")


def test_the_runner_reads_what_an_agent_needs_from_the_agent() -> None:
    from drgym.benchmarks.run import BenchConfig, _agent_kwargs, _missing_requirement

    config = BenchConfig(agents="rag", llm=None, search="local", corpus="demo")
    assert "needs an LLM" in (_missing_requirement("rag", config) or "")
    assert _agent_kwargs("rag", config) == {"search": "local", "corpus": "demo"}
    assert _agent_kwargs("scripted", config) == {}
    assert _missing_requirement("scripted", config) is None


def test_a_command_from_another_package_runs_under_drgym(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_entry_points(monkeypatch, tmp_path, "drgym.commands", {"echo": "tests.plugins:echo_command"})
    assert drgym_main(["echo", "a", "--b"]) == 2
    assert capsys.readouterr().out == "echo: a --b\n"
