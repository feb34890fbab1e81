"""One figure comparing runs of the two TRL paths (``rollout_path``), several seeds each, side by side.

    python -m agents.grpo.plot_paths RUN_DIR... --out paths.png

It also prints one line of figures per run (:func:`summarize`) and the mean and min-max per label.

Each run directory holds the ``metrics.jsonl`` and ``config.yaml`` a training run writes; runs are grouped by
their config's ``rollout_path`` (and ``tool_schemas_in_prompt``, ``warmstart_eos_after_answer``: the label) and each group is drawn as its mean over seeds, with the min-max
band across seeds. Panels: training reward, training F1, training format-error rate (per step) and held-out F1
(at the evaluation steps).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drgym.errors import DataError, DependencyNotInstalled, DrgymError

__all__ = ["PANELS", "Run", "group_runs", "load_run", "main", "plot_paths", "summarize"]

PANELS: tuple[tuple[str, str], ...] = (
    ("rollout/reward_mean", "training reward"),
    ("rollout/f1", "training F1"),
    ("rollout/format_error_rate", "training format-error rate"),
    ("eval/f1", "held-out F1 (greedy)"),
)
"""(metric, panel title) of each panel, left to right."""


@dataclass(frozen=True)
class Run:
    """One training run: its label (``rollout_path``, then ``/no-schemas`` for an environment_factory run with
    ``tool_schemas_in_prompt: false`` and ``/eos-warmstart`` with ``warmstart_eos_after_answer``), seed and
    metric rows."""

    directory: Path
    path: str
    seed: int
    rows: list[dict[str, Any]]

    def series(self, key: str) -> dict[int, float]:
        """``step -> value`` of one metric (steps where it was logged)."""
        return {int(r["step"]): float(r[key]) for r in self.rows if isinstance(r.get(key), (int, float))}


def load_run(directory: str | Path) -> Run:
    """Read a run directory's ``metrics.jsonl`` and ``config.yaml``.

    Raises:
        DataError: A file is missing or unreadable, or the run logged no metrics.
    """
    import yaml

    from .metrics import read_metrics

    directory = Path(directory)
    metrics, config = directory / "metrics.jsonl", directory / "config.yaml"
    for file in (metrics, config):
        if not file.is_file():
            raise DataError(f"run {directory}: {file.name} is missing (is it the output_dir of a training run?)")
    try:
        settings = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"run {directory}: config.yaml is not readable YAML: {exc}") from exc
    if not isinstance(settings, dict):
        raise DataError(f"run {directory}: config.yaml does not hold a mapping of settings")
    rows = read_metrics(metrics)
    if not rows:
        raise DataError(f"run {directory}: metrics.jsonl holds no metrics")
    label = str(settings.get("rollout_path", "rollout_func"))
    if label == "environment_factory" and settings.get("tool_schemas_in_prompt") is False:
        label += "/no-schemas"
    if settings.get("warmstart_eos_after_answer"):
        label += "/eos-warmstart"
    return Run(directory, label, int(settings.get("seed", 0)), rows)


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by label, in first-seen order, each group sorted by seed."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.path, []).append(run)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in groups.items()}


def _band(runs: Sequence[Run], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps every run logged ``key`` at, and the mean, min and max across the runs there."""
    series = [r.series(key) for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    values = [[s[t] for s in series] for t in steps]
    return (
        steps,
        [statistics.fmean(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def plot_paths(runs: Sequence[Run], out: str | Path) -> Path:
    """Draw the comparison figure of ``runs`` to ``out`` (PNG) and return its path.

    Raises:
        DependencyNotInstalled: matplotlib is missing.
        DataError: No run logged any of the plotted metrics.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise DependencyNotInstalled("plot_paths needs matplotlib (pip install 'drgym[agents]')") from exc
    groups = group_runs(runs)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8))
    drawn = False
    for ax, (key, title) in zip(axes, PANELS):
        for n, (path, members) in enumerate(groups.items()):
            steps, mean, low, high = _band(members, key)
            if not steps:
                continue
            seeds = ",".join(str(r.seed) for r in members)
            marker = "o" if key.startswith("eval/") else None
            ax.plot(steps, mean, color=f"C{n}", marker=marker, markersize=4, label=f"{path} (seeds {seeds})")
            ax.fill_between(steps, low, high, color=f"C{n}", alpha=0.2, linewidth=0)
            drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        raise DataError("none of the runs logged " + ", ".join(k for k, _ in PANELS))
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:  # no training rows: the held-out panel has the labels
        handles, labels = axes[-1].get_legend_handles_labels()
    rows = -(-len(handles) // 3)
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(handles)), fontsize=8)
    fig.suptitle("mean over seeds, band: min-max across seeds", fontsize=9)
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


_LAST = 5
"""Training figures are averaged over a run's last this many steps (one step's 8 questions are noisy)."""


def summarize(run: Run) -> dict[str, float]:
    """A run's figures: seconds per step (all of it, the rollout, the rest: the update), training reward,
    F1, format-error rate and tool calls over its last steps, and held-out F1 and format errors first and last."""

    def last(key: str) -> float:
        values = list(run.series(key).values())[-_LAST:]
        return statistics.fmean(values) if values else float("nan")

    def mean(key: str) -> float:
        values = list(run.series(key).values())
        return statistics.fmean(values) if values else float("nan")

    evals = run.series("eval/f1")
    eval_errors = run.series("eval/format_error_rate")
    out = {
        "steps": float(max(run.series("rollout/reward_mean"), default=0)),
        "step_s": mean("charts/step_seconds"),
        "rollout_s": mean("charts/rollout_seconds"),
        "train_reward_last": last("rollout/reward_mean"),
        "train_f1_last": last("rollout/f1"),
        "train_format_errors_last": last("rollout/format_error_rate"),
        "train_tool_calls_last": last("rollout/tool_calls"),
        "eval_f1_first": evals[min(evals)] if evals else float("nan"),
        "eval_f1_last": evals[max(evals)] if evals else float("nan"),
        "eval_format_errors_last": eval_errors[max(eval_errors)] if eval_errors else float("nan"),
    }
    out["update_s"] = out["step_s"] - out["rollout_s"]
    return out


def _table(runs: Sequence[Run]) -> str:
    """Each run's :func:`summarize` line, then each label's mean and [min, max] over its seeds."""
    keys = list(summarize(runs[0]))
    lines = ["label seed " + " ".join(keys)]
    for label, members in group_runs(runs).items():
        rows = [summarize(r) for r in members]
        for run, row in zip(members, rows):
            lines.append(f"{label} {run.seed} " + " ".join(f"{row[k]:.3f}" for k in keys))
        cells = []
        for k in keys:
            values = [row[k] for row in rows]
            cells.append(f"{statistics.fmean(values):.3f}[{min(values):.3f},{max(values):.3f}]")
        lines.append(f"{label} mean[min,max] " + " ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``RUN_DIR... --out F.png``."""
    parser = argparse.ArgumentParser(prog="python -m agents.grpo.plot_paths", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output_dir of a training run")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(d) for d in args.runs]
        path = plot_paths(runs, args.out)
    except DrgymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_table(runs))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
