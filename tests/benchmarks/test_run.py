"""The side-by-side runner: outputs, resumption, crashing agents, agent selection and bad names."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from drgym.benchmarks.run import (
    DEFAULT_DATASETS,
    BenchConfig,
    TrajectoryStore,
    main,
    parse_args,
    plan_questions,
    run_bench,
    select_agents,
)
from drgym.errors import ConfigError
from drgym.runner import read_jsonl
from tests.benchmarks.bench_agents import InterruptingAgent
from tests.plugins import register_entry_points

DEMO_QUESTIONS = 22


@pytest.fixture
def test_agents(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Register the crashing and interrupting agents (as entry points) for the duration of a test."""
    agents = {
        "crashy": "tests.benchmarks.bench_agents:CrashyAgent",
        "interrupting": "tests.benchmarks.bench_agents:InterruptingAgent",
    }
    register_entry_points(monkeypatch, tmp_path_factory.mktemp("plugins"), "drgym.agents", agents)
    monkeypatch.setattr(InterruptingAgent, "started", 0)


def _config(out: Path, **overrides) -> BenchConfig:
    base = {
        "agents": "scripted",
        "datasets": "demo",
        "limit": None,
        "out": str(out),
        "no_progress": True,
        "no_plot": True,
        "resamples": 200,
        "concurrency": 4,
    }
    return BenchConfig(**{**base, **overrides})


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted scripted run over the demo set: what every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    return run_bench(_config(out)).scores


def test_run_writes_trajectories_scores_and_report(reference: dict, tmp_path: Path) -> None:
    result = run_bench(_config(tmp_path, no_plot=False))
    trajs = read_jsonl(tmp_path / "trajectories" / "scripted.jsonl")
    assert len(trajs) == DEMO_QUESTIONS == result.episodes_run
    assert {t.metadata["dataset"] for t in trajs} == {"demo"}
    assert len({t.record_id for t in trajs}) == DEMO_QUESTIONS

    scores = json.loads((tmp_path / "scores.json").read_text())
    agent = scores["agents"]["scripted"]
    assert agent["episodes"] == DEMO_QUESTIONS and agent["failures"] == 0
    assert scores["columns"] == ["demo", "avg"]
    mean_f1 = sum(t.f1 for t in trajs) / len(trajs)  # the env's own F1 of each episode
    assert agent["scores"]["f1"]["demo"]["mean"] == pytest.approx(mean_f1)
    assert agent["scores"]["f1"]["avg"]["mean"] == pytest.approx(mean_f1)
    assert 0 < mean_f1 < 1
    assert agent["cost"]["tool_calls"]["mean"] == pytest.approx(sum(t.tool_calls for t in trajs) / len(trajs))
    assert scores["mbe"]["computed"] is False and "no judge configured" in scores["mbe"]["reason"]
    assert scores["agents"]["scripted"]["scores"] == reference["agents"]["scripted"]["scores"]

    report = (tmp_path / "report.md").read_text()
    assert "| agent | n | demo | Avg |" in report
    assert f"| scripted | {DEMO_QUESTIONS} | {100 * mean_f1:.1f} [" in report
    assert "Not computed: no judge configured" in report
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_questions(tmp_path: Path) -> None:
    run_bench(_config(tmp_path))
    again = run_bench(_config(tmp_path))
    assert again.episodes_run == 0
    assert len(_lines(tmp_path / "trajectories" / "scripted.jsonl")) == DEMO_QUESTIONS
    assert again.scores["agents"]["scripted"]["episodes"] == DEMO_QUESTIONS


def test_resume_after_a_torn_file_gives_the_same_scores(reference: dict, tmp_path: Path) -> None:
    run_bench(_config(tmp_path))
    path = tmp_path / "trajectories" / "scripted.jsonl"
    lines = _lines(path)
    # A crash mid-write: 10 whole lines, then half of the 11th.
    path.write_text("\n".join(lines[:10]) + "\n" + lines[10][: len(lines[10]) // 2], encoding="utf-8")

    resumed = run_bench(_config(tmp_path))

    assert resumed.episodes_run == DEMO_QUESTIONS - 10
    assert len(_lines(path)) == DEMO_QUESTIONS
    assert all(json.loads(line) for line in _lines(path))  # the torn line was cut, not glued onto
    assert resumed.scores["agents"]["scripted"]["scores"] == reference["agents"]["scripted"]["scores"]


def test_resume_after_an_interrupt_gives_the_same_scores(
    reference: dict, tmp_path: Path, test_agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(InterruptingAgent, "interrupt_after", 7)
    with pytest.raises(KeyboardInterrupt):
        run_bench(_config(tmp_path, agents="interrupting", concurrency=1))
    path = tmp_path / "trajectories" / "interrupting.jsonl"
    assert len(_lines(path)) == 7  # every finished episode was on disk when the run died
    assert not (tmp_path / "scores.json").exists()

    monkeypatch.setattr(InterruptingAgent, "interrupt_after", 10**9)
    resumed = run_bench(_config(tmp_path, agents="interrupting"))

    assert resumed.episodes_run == DEMO_QUESTIONS - 7
    assert resumed.scores["agents"]["interrupting"]["scores"] == reference["agents"]["scripted"]["scores"]


def test_a_crashing_agent_is_a_failure_for_that_question_only(tmp_path: Path, test_agents) -> None:
    config = _config(tmp_path, agents="crashy", agent_arg=['crashy.crash_on=["demo:003"]'])
    result = run_bench(config)
    agent = result.scores["agents"]["crashy"]
    assert agent["episodes"] == DEMO_QUESTIONS and agent["failures"] == 1
    trajs = read_jsonl(tmp_path / "trajectories" / "crashy.jsonl")
    crashed = [t for t in trajs if t.error]
    assert [t.record_id for t in crashed] == ["demo:003"]
    assert "planned crash on demo:003" in crashed[0].error
    assert "| crashy | 22 | 1 | 0 |" in (tmp_path / "report.md").read_text()

    assert run_bench(config).episodes_run == 0  # a recorded failure counts as done...
    retried = run_bench(
        _config(tmp_path, agents="crashy", retry_failed=True, agent_arg=['crashy.crash_on=["demo:003"]'])
    )
    assert retried.episodes_run == 1  # ...unless asked to retry it; the newest line wins
    assert retried.scores["agents"]["crashy"]["failures"] == 1
    assert retried.scores["agents"]["crashy"]["episodes"] == DEMO_QUESTIONS


def test_store_reads_back_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"agent": "x", "record_id": "1", "source": "s", "question": "q", "answers": ["a"], '
        '"metadata": {"dataset": "d"}}\n{"agent": "x", "rec',
        encoding="utf-8",
    )
    store = TrajectoryStore(path)
    assert store.finished() == {("d", "1")}
    store.close()
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_default_selection_runs_scripted_and_skips_llm_agents_with_a_reason() -> None:
    pools, skipped = select_agents(BenchConfig())
    assert "scripted" in pools
    assert {"prompt", "rag", "grpo"} <= set(skipped)
    assert skipped["prompt"] == "needs an LLM (--llm openai:URL --model NAME)"
    assert "--checkpoint" in skipped["grpo"]


def test_an_llm_agent_named_without_an_llm_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"agent `rag` needs an LLM \(--llm openai:URL --model NAME\)"):
        select_agents(BenchConfig(agents="scripted,rag"))


def test_unknown_agent_lists_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown agent `scriptd`; valid agents: .*scripted.*Did you mean `scripted`"
    ):
        select_agents(BenchConfig(agents="scriptd"))
    with pytest.raises(ConfigError, match=r"--agent-arg 'nobody.x=1' names unknown agent `nobody`"):
        select_agents(BenchConfig(agents="scripted", agent_arg=["nobody.x=1"]))


def test_unknown_dataset_lists_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown dataset `demoo`; valid datasets: .*demo.*Did you mean `demo`"
    ):
        plan_questions(["demoo"], limit=10)


def test_main_reports_bad_names_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--datasets", "nope", "--out", str(tmp_path)]) == 2
    assert "benchmarks.run: error: unknown dataset `nope`; valid datasets:" in capsys.readouterr().err
    assert main(["--agents", "nobody", "--datasets", "demo", "--out", str(tmp_path)]) == 2
    assert "unknown agent `nobody`; valid agents:" in capsys.readouterr().err
    assert main(["--concurrency", "0"]) == 2
    assert "--concurrency must be a positive integer, got 0" in capsys.readouterr().err


def test_main_default_run_prints_skipped_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["--datasets", "demo", "--limit", "3", "--out", str(tmp_path), "--no-progress", "--no-plot"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "skipping agent prompt: needs an LLM" in out
    assert "scripted: F1" in out and "over 3 episodes" in out
    assert "MBE not computed" in out


def test_defaults_are_the_offline_question_sets() -> None:
    config = parse_args([])
    assert config.datasets.split(",") == list(DEFAULT_DATASETS)
    assert (config.limit, config.search, config.out, config.agents) == (100, "local", "runs/bench", None)
    assert parse_args(["--limit", "all"]).limit is None


def test_limit_applies_per_data_source(data_mirror: Path) -> None:
    (plan,) = plan_questions(["deepresearcher-dev"], limit=3)
    assert Counter(plan.sources) == {
        s: 3 for s in ("nq", "tq", "hotpotqa", "2wiki", "musique", "bamboogle", "popqa")
    }
    (only,) = plan_questions(["deepresearcher-dev"], limit=2, sources=["Bamboogle", "triviaqa"])
    assert Counter(only.sources) == {"bamboogle": 2, "tq": 2}
    with pytest.raises(ConfigError, match="no question left: --sources nq matches none of the data sources"):
        plan_questions(["demo"], limit=2, sources=["nq"])


def test_episodes_of_other_settings_are_never_mixed_in(tmp_path: Path) -> None:
    run_bench(_config(tmp_path, limit=3))
    with pytest.raises(
        ConfigError,
        match=r"scripted.jsonl holds episodes of agent `scripted` played with other "
        r"settings \(env max_turns: 10 then, 4 now\); pass another --out",
    ):
        run_bench(_config(tmp_path, limit=3, max_turns=4))
    assert run_bench(_config(tmp_path, limit=5)).episodes_run == 2  # more questions, same settings: fine


def test_drgym_bench_is_the_same_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from drgym.cli import main as drgym_main

    assert drgym_main(["bench", "--datasets", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown dataset `nope`" in capsys.readouterr().err
