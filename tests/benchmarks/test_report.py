"""Report generation from a small fixed run: scores.json numbers, report.md tables, report.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from drgym.benchmarks.judge import Verdict
from drgym.benchmarks.report import build_scores, render_markdown, write_report
from drgym.runner import Trajectory, TurnRecord


def _traj(
    agent: str,
    source: str,
    answer: str | None,
    gold: str,
    *,
    reward: float | None = None,
    error: str | None = None,
    tokens: int | None = None,
) -> Trajectory:
    turns = [
        TurnRecord(0, "a", "o", 0.0, "web_search", {}, True, None, 0.1, 0.1, 10 if tokens else None, tokens)
    ]
    return Trajectory(
        agent=agent,
        record_id=f"{source}-{gold}",
        source=source,
        question=f"q {gold}?",
        answers=[gold],
        answer=answer,
        reward=1.0 if reward is None else reward,
        terminated=error is None,
        error=error,
        turns=turns,
        tool_calls=2,
        search_calls=3,
        pages_read=1,
        wall_time_s=2.0,
    )


@pytest.fixture
def run() -> dict[str, list[Trajectory]]:
    """Two agents on two sources. ``good``: hotpotqa F1 = 1, 2/3; popqa 1, 0.
    ``weak``: one format failure, one crash, two wrong answers (all 0)."""
    return {
        "good": [
            _traj("good", "hotpotqa", "Paris", "Paris", tokens=30),
            _traj("good", "hotpotqa", "Paris France", "Paris", tokens=50),
            _traj("good", "popqa", "1802", "1802", tokens=40),
            _traj("good", "popqa", "Rome", "1802", tokens=40),
        ],
        "weak": [
            _traj("weak", "hotpotqa", "Paris", "Paris", reward=-1.0),  # right words, broken format
            _traj("weak", "hotpotqa", None, "Paris", error="RuntimeError: boom"),
            _traj("weak", "popqa", "x", "1802"),
            _traj("weak", "popqa", "y", "1802"),
        ],
    }


def test_scores_hold_per_source_cells_the_average_and_costs(run) -> None:
    scores = build_scores(run, skipped={"rag": "needs an LLM"}, meta={"datasets": "fixed"}, n_resamples=300)
    assert scores["sources"] == ["hotpotqa", "popqa"]  # the paper's column order
    assert scores["columns"] == ["hotpotqa", "popqa", "avg"]
    good = scores["agents"]["good"]["scores"]["f1"]
    # "Paris France" vs "Paris": token sets {paris, france} / {paris}: P = 1/2, R = 1, F1 = 2/3.
    assert good["hotpotqa"]["mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert good["popqa"]["mean"] == pytest.approx(0.5)
    assert good["avg"]["mean"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert good["popqa"]["lo"] <= 0.5 <= good["popqa"]["hi"] and good["popqa"]["n"] == 2
    weak = scores["agents"]["weak"]
    assert (weak["episodes"], weak["failures"], weak["format_failures"]) == (4, 1, 1)
    assert weak["scores"]["f1"]["avg"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 4}
    cost = scores["agents"]["good"]["cost"]
    assert cost["search_calls"]["mean"] == 3.0 and cost["completion_tokens"]["mean"] == 40.0
    assert scores["agents"]["weak"]["cost"]["completion_tokens"] is None
    assert scores["paper"]["DeepResearcher"]["f1"] == {"hotpotqa": 0.528, "popqa": 0.485}
    assert scores["metrics"] == ["f1", "em", "squad_f1", "squad_em"]
    assert scores["mbe"]["computed"] is False
    assert json.loads(json.dumps(scores)) == scores  # JSON-ready


def test_markdown_has_a_table_per_metric_with_paper_rows(run) -> None:
    scores = build_scores(
        run,
        skipped={"rag": "needs an LLM"},
        mbe_reason="no judge configured",
        meta={"datasets": "fixed"},
        n_resamples=300,
    )
    md = render_markdown(scores)
    for heading in (
        "## F1 (paper normalisation)",
        "## EM (paper normalisation)",
        "## F1 (SQuAD normalisation)",
        "## EM (SQuAD normalisation)",
        "## MBE (LLM judge)",
        "## Cost per episode",
        "## Skipped agents",
    ):
        assert heading in md
    assert "| agent | n | HotpotQA | PopQA | Avg |" in md
    f1_table = md.split("## F1 (paper normalisation)")[1].split("##")[0]
    assert "| good | 4 | 83.3 [" in f1_table and "| weak | 4 | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] |" in f1_table
    assert "| *paper: DeepResearcher* |  | 52.8 | 48.5 | 50.6 |" in f1_table
    assert "*paper:" not in md.split("## EM (paper normalisation)")[1].split("##")[0]  # the paper has no EM
    assert "Not computed: no judge configured." in md
    assert "| weak | 4 | 1 | 1 |" in md
    assert "- rag: needs an LLM" in md and "- datasets: fixed" in md


def test_mbe_counts_judge_failures_as_incorrect_and_reports_them(run) -> None:
    verdicts = {
        "good": [
            Verdict(True, "", "exact"),
            Verdict(True, "", "judge"),
            Verdict(True, "", "exact"),
            Verdict(None, "unreadable", "failure"),
        ],
        "weak": [Verdict(False, "", "no_answer")] * 4,
    }
    stats = {"model": "judge-mini", "requests": 4, "cache_hits": 0, "exact": 2, "no_answer": 4, "failures": 1}
    scores = build_scores(run, verdicts=verdicts, judge_stats=stats, n_resamples=300)
    good = scores["agents"]["good"]
    assert good["scores"]["mbe"]["hotpotqa"]["mean"] == 1.0
    assert good["scores"]["mbe"]["popqa"]["mean"] == 0.5  # the failure is not counted correct
    assert good["judge_failures"] == 1
    md = render_markdown(scores)
    assert "| good | 4 | 100.0 [100.0, 100.0] | 50.0 [" in md.split("## MBE (LLM judge)")[1]
    assert "| *paper: DeepResearcher* |  | 64.3 | 52.7 | 58.5 |" in md
    assert "Judge `judge-mini`: 4 requests" in md and "1 judge failures (counted as incorrect): good 1." in md
    with pytest.raises(ValueError, match="must be aligned"):
        build_scores(run, verdicts={"good": verdicts["good"][:2], "weak": verdicts["weak"]})


def test_files_are_written(run, tmp_path: Path) -> None:
    scores = build_scores(run, n_resamples=100)
    written = write_report(scores, tmp_path)
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    assert (tmp_path / "report.md").read_text() == render_markdown(scores)
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_matplotlib_skips_the_chart_with_a_clear_message(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    written = write_report(build_scores(run, n_resamples=100), tmp_path)
    assert written["plot_error"] == 'matplotlib is not installed, run pip install "drgym[agents]"'
    assert (tmp_path / "report.md").exists() and not (tmp_path / "report.png").exists()
