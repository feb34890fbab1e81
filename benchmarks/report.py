"""Benchmark reports: ``scores.json`` (every number), ``report.md`` (tables) and ``report.png`` (bars).

Rows are agents, columns are data sources plus their average (each source weighs the same, as in the paper's
tables). Every cell carries a seeded bootstrap confidence interval; the paper's numbers are added as reference
rows where it reports the metric. All scores in ``scores.json`` are fractions in [0, 1]; the report shows
percent, as the paper does.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drgym.errors import missing_dependency
from drgym.runner import Trajectory

from .judge import Verdict
from .metrics import (
    ANSWER_METRICS,
    COST_FIELDS,
    METRIC_NAMES,
    Interval,
    bootstrap_macro_mean,
    bootstrap_mean,
    episode_costs,
    score_trajectory,
)
from .paper import PAPER_METHODS, PAPER_NOTE, display_source, order_sources, paper_value

__all__ = ["AVG", "SCORES_VERSION", "build_scores", "plot_report", "render_markdown", "write_report"]

AVG = "avg"
"""The column key of the per-source average."""

SCORES_VERSION = 1

_COST_HEADINGS = {
    "tool_calls": ("tool calls", 2),
    "search_calls": ("search queries", 2),
    "pages_read": ("pages read", 2),
    "prompt_tokens": ("prompt tokens", 0),
    "completion_tokens": ("completion tokens", 0),
    "wall_time_s": ("wall s", 2),
}
_PLOT_REFERENCE = "DeepResearcher"


# ------------------------------------------------------------------------------------------------ scores


def build_scores(
    trajectories: Mapping[str, Sequence[Trajectory]],
    *,
    verdicts: Mapping[str, Sequence[Verdict]] | None = None,
    mbe_reason: str | None = None,
    judge_stats: Mapping[str, Any] | None = None,
    skipped: Mapping[str, str] | None = None,
    meta: Mapping[str, Any] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything a report shows, as a JSON-ready dict.

    Args:
        trajectories: Each agent's finished episodes.
        verdicts: Each agent's judge verdicts, aligned with its trajectories; None when MBE was not computed.
        mbe_reason: Why MBE was not computed (shown in the report instead of a table).
        judge_stats: The judge's counters (requests, cache hits, failures...).
        skipped: Agents not run, with the reason.
        meta: Run description (datasets, search backend, limit, date...), copied as is.
        n_resamples: Bootstrap resamples per cell.
        confidence: Confidence level of the intervals.
        seed: Bootstrap seed (the same run always gives the same intervals).
    """
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    sources = order_sources({t.source for trajs in trajectories.values() for t in trajs})
    metrics = [*ANSWER_METRICS, *(["mbe"] if verdicts is not None else [])]
    agents = {
        name: _agent_scores(trajs, None if verdicts is None else verdicts.get(name), sources, boot)
        for name, trajs in trajectories.items()
    }
    paper = {
        method: {
            m: {s: _percent_to_fraction(paper_value(method, s, m)) for s in sources} for m in ("f1", "mbe")
        }
        for method in PAPER_METHODS
    }
    return {
        "version": SCORES_VERSION,
        "meta": dict(meta or {}),
        "sources": sources,
        "columns": [*sources, AVG],
        "metrics": metrics,
        "mbe": {"computed": verdicts is not None, "reason": mbe_reason, "judge": dict(judge_stats or {})},
        "bootstrap": boot,
        "agents": agents,
        "skipped": dict(skipped or {}),
        "paper": paper,
    }


def _percent_to_fraction(value: float | None) -> float | None:
    return None if value is None else round(value / 100.0, 6)


def _agent_scores(
    trajs: Sequence[Trajectory], verdicts: Sequence[Verdict] | None, sources: list[str], boot: dict[str, Any]
) -> dict[str, Any]:
    if verdicts is not None and len(verdicts) != len(trajs):
        raise ValueError(f"{len(verdicts)} verdicts for {len(trajs)} trajectories; they must be aligned")
    by_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    costs: dict[str, list[float]] = defaultdict(list)
    failures = format_failures = judge_failures = 0
    for i, traj in enumerate(trajs):
        score = score_trajectory(traj)
        failures += score.failed
        format_failures += not score.failed and not score.format_ok
        for metric in ANSWER_METRICS:
            by_metric[metric][traj.source].append(getattr(score, metric))
        if verdicts is not None:
            correct = verdicts[i].correct
            judge_failures += correct is None
            # A judge failure counts as incorrect (and is reported): never silently correct.
            by_metric["mbe"][traj.source].append(1.0 if correct else 0.0)
        for name, value in episode_costs(traj).items():
            if value is not None:
                costs[name].append(value)
    scores = {
        metric: {
            **{s: _cell(bootstrap_mean(groups.get(s, []), **boot)) for s in sources},
            AVG: _cell(bootstrap_macro_mean(groups, **boot)),
        }
        for metric, groups in by_metric.items()
    }
    return {
        "episodes": len(trajs),
        "failures": failures,
        "format_failures": format_failures,
        "judge_failures": judge_failures if verdicts is not None else None,
        "scores": scores,
        "cost": {name: _cell(bootstrap_mean(costs.get(name, []), **boot)) for name in COST_FIELDS},
    }


def _cell(interval: Interval | None) -> dict[str, Any] | None:
    return None if interval is None else interval.to_dict()


# ------------------------------------------------------------------------------------------------ markdown


def _fmt_cell(cell: Mapping[str, Any] | None, *, scale: float = 100.0, digits: int = 1) -> str:
    if cell is None:
        return "–"
    mean, lo, hi = (cell[k] * scale for k in ("mean", "lo", "hi"))
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _paper_rows(scores: Mapping[str, Any], metric: str) -> list[list[str]]:
    rows = []
    sources = scores["sources"]
    for method, table in scores["paper"].items():
        values = [table.get(metric, {}).get(s) for s in sources]
        if all(v is None for v in values):
            continue
        known = [v for v in values if v is not None]
        avg = sum(known) / len(known) if len(known) == len(values) else None
        cells = ["–" if v is None else f"{100 * v:.1f}" for v in [*values, avg]]
        rows.append([f"*paper: {method}*", "", *cells])
    return rows


def _metric_section(scores: Mapping[str, Any], metric: str) -> list[str]:
    header = ["agent", "n", *(display_source(s) for s in scores["sources"]), "Avg"]
    rows = [
        [
            name,
            str(agent["episodes"]),
            *(_fmt_cell(agent["scores"][metric].get(c)) for c in scores["columns"]),
        ]
        for name, agent in scores["agents"].items()
    ]
    rows += _paper_rows(scores, metric)
    return [f"## {METRIC_NAMES[metric]}", "", *_table(header, rows), ""]


def _mbe_section(scores: Mapping[str, Any]) -> list[str]:
    mbe = scores["mbe"]
    if not mbe["computed"]:
        reason = mbe.get("reason") or "no judge configured"
        return [f"## {METRIC_NAMES['mbe']}", "", f"Not computed: {reason}.", ""]
    lines = _metric_section(scores, "mbe")
    stats = mbe.get("judge") or {}
    if stats:
        failures = {name: a.get("judge_failures") or 0 for name, a in scores["agents"].items()}
        lines += [
            f"Judge `{stats.get('model', '?')}`: {stats.get('requests', 0)} requests, "
            f"{stats.get('cache_hits', 0)} cache hits, {stats.get('exact', 0)} exact matches not sent, "
            f"{stats.get('no_answer', 0)} without an answer, {stats.get('failures', 0)} judge failures "
            "(counted as incorrect)"
            + (
                ": " + ", ".join(f"{k} {v}" for k, v in failures.items() if v)
                if any(failures.values())
                else ""
            )
            + ".",
            "",
        ]
    return lines


def _cost_section(scores: Mapping[str, Any]) -> list[str]:
    header = ["agent", "episodes", "failures", "format failures", *(h for h, _ in _COST_HEADINGS.values())]
    rows = []
    for name, agent in scores["agents"].items():
        cells = [_fmt_cell(agent["cost"].get(f), scale=1.0, digits=d) for f, (_, d) in _COST_HEADINGS.items()]
        rows.append(
            [name, str(agent["episodes"]), str(agent["failures"]), str(agent["format_failures"]), *cells]
        )
    return ["## Cost per episode", "", *_table(header, rows), ""]


def _meta_lines(scores: Mapping[str, Any]) -> list[str]:
    meta = scores["meta"]
    boot = scores["bootstrap"]
    lines = [f"- {key}: {value}" for key, value in meta.items() if value not in (None, "", [], {})]
    lines.append(
        f"- cells: mean [lo, hi] in percent, {100 * boot['confidence']:.0f}% percentile bootstrap "
        f"({boot['n_resamples']} resamples, seed {boot['seed']}); Avg weighs each data source equally; "
        "a format failure or a crashed episode scores 0"
    )
    return lines


def render_markdown(scores: Mapping[str, Any]) -> str:
    """``report.md``: run description, one table per metric, MBE (or why not), cost, skipped agents."""
    lines = ["# drgym benchmark", "", *_meta_lines(scores), ""]
    if not scores["agents"]:
        lines += ["No agent was run.", ""]
    else:
        for metric in ANSWER_METRICS:
            lines += _metric_section(scores, metric)
        lines += _mbe_section(scores)
        lines += _cost_section(scores)
        lines += [PAPER_NOTE, ""]
    if scores["skipped"]:
        lines += ["## Skipped agents", ""]
        lines += [f"- {name}: {reason}" for name, reason in scores["skipped"].items()]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ chart


def plot_report(scores: Mapping[str, Any], path: str | Path) -> Path:
    """``report.png``: grouped bars (agents, with their intervals) per column, one panel per metric.

    Uses matplotlib's object API on the Agg canvas (no pyplot, no global backend change).

    Raises:
        DependencyNotInstalled: matplotlib is missing (it comes with ``drgym[agents]``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise missing_dependency("matplotlib", "agents") from exc
    panels = ["f1", "em", *(["mbe"] if scores["mbe"]["computed"] else [])]
    columns = scores["columns"]
    agents = list(scores["agents"])
    fig = Figure(figsize=(max(6.0, 1.3 * len(columns) + 2), 3.2 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    for row, metric in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, row + 1)
        series = len(agents) + (metric in ("f1", "mbe"))  # the paper's reference bar takes a slot
        width = 0.8 / series
        for j, name in enumerate(agents):
            cells = [scores["agents"][name]["scores"].get(metric, {}).get(c) for c in columns]
            means = [100 * c["mean"] if c else math.nan for c in cells]
            errs = [
                [100 * (c["mean"] - c["lo"]) if c else 0 for c in cells],
                [100 * (c["hi"] - c["mean"]) if c else 0 for c in cells],
            ]
            xs = [i + (j - (series - 1) / 2) * width for i in range(len(columns))]
            ax.bar(xs, means, width, yerr=errs, capsize=2, label=name)
        if metric in ("f1", "mbe"):
            ref = [scores["paper"][_PLOT_REFERENCE][metric].get(c) for c in scores["sources"]]
            known = [v for v in ref if v is not None]
            ref.append(sum(known) / len(known) if known and len(known) == len(ref) else None)
            xs = [i + (len(agents) - (series - 1) / 2) * width for i in range(len(columns))]
            ax.bar(
                xs,
                [math.nan if v is None else 100 * v for v in ref],
                width,
                fill=False,
                hatch="//",
                label=f"paper: {_PLOT_REFERENCE}",
            )
        ax.set_xticks(range(len(columns)), [display_source(c) if c != AVG else "Avg" for c in columns])
        ax.set_ylabel(f"{METRIC_NAMES[metric].split(' (')[0]} (%)")
        ax.set_ylim(0, 100)
        ax.set_title(METRIC_NAMES[metric], fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------------ files


def write_report(scores: Mapping[str, Any], out_dir: str | Path, *, plot: bool = True) -> dict[str, Any]:
    """Write ``scores.json``, ``report.md`` and (when matplotlib is there) ``report.png`` into ``out_dir``.

    Returns the paths written and, under ``"plot_error"``, why the chart was not drawn.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    scores_path = out / "scores.json"
    _atomic_write(scores_path, json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    written["scores"] = scores_path
    report_path = out / "report.md"
    _atomic_write(report_path, render_markdown(scores))
    written["report"] = report_path
    if plot and scores["agents"]:
        try:
            written["plot"] = plot_report(scores, out / "report.png")
        except ImportError as exc:  # DependencyNotInstalled is an ImportError
            written["plot_error"] = str(exc)
    return written


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
