"""Training metrics: per-step summaries of the episodes, the ``metrics.jsonl`` sink, and the final plot.

Names are grouped CleanRL-style: ``rollout/…`` (what the policy did in the step's episodes), ``eval/…`` (greedy
episodes on held-out questions), ``warmstart/…``, and ``trl/…`` (what TRL's trainer logged: loss, KL, entropy,
clip ratios, grad norm, learning rate, step time). TensorBoard and other sinks are TRL's (``report_to``).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drgym.integrations._trl_rollout import EpisodeTokens

__all__ = ["MetricsLogger", "episode_metrics", "plot_curves", "read_metrics"]

logger = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def episode_metrics(episodes: Sequence[EpisodeTokens], prefix: str = "rollout") -> dict[str, float]:
    """Reward, F1, format-error, cut and error rates, tool calls, turns and token counts of a batch."""
    if not episodes:
        return {}
    rewards = [e.reward for e in episodes]
    return {
        f"{prefix}/reward_mean": _mean(rewards),
        f"{prefix}/reward_std": float(statistics.pstdev(rewards)) if len(rewards) > 1 else 0.0,
        f"{prefix}/f1": _mean([e.f1 for e in episodes]),
        f"{prefix}/format_error_rate": _mean([0.0 if e.format_ok else 1.0 for e in episodes]),
        f"{prefix}/truncated_rate": _mean([1.0 if e.cut else 0.0 for e in episodes]),
        f"{prefix}/error_rate": _mean([1.0 if e.error else 0.0 for e in episodes]),
        f"{prefix}/tool_calls": _mean([e.tool_calls for e in episodes]),
        f"{prefix}/turns": _mean([len(e.turns) for e in episodes]),
        f"{prefix}/response_tokens": _mean([sum(e.env_mask) for e in episodes]),
        f"{prefix}/sequence_tokens": _mean([len(e.prompt_ids) + len(e.completion_ids) for e in episodes]),
        f"{prefix}/episodes": float(len(episodes)),
    }


class MetricsLogger:
    """Writes one JSON line per step to ``metrics.jsonl``.

    On resume, lines after the resumed step are dropped first (written after the last checkpoint by a run that
    then crashed), so the file holds each step once.

    Args:
        path: The JSONL file.
        resume_step: The step the run resumes after (``None``: a fresh run, the file starts empty).
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = (
            [m for m in read_metrics(self.path) if m.get("step", 0) <= resume_step]
            if resume_step is not None
            else []
        )
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(m) + "\n" for m in kept)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append a step's metrics (non-finite values are written as null in JSON)."""
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (a torn last line is skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_curves(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot reward and F1 per step (training rollouts, and held-out evaluations when present) to a PNG.

    Returns the PNG path, or ``None`` when matplotlib is missing or there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no plot written")
        return None
    rows = read_metrics(metrics_path)
    series = {
        "train reward": "rollout/reward_mean",
        "train F1": "rollout/f1",
        "eval reward": "eval/reward_mean",
        "eval F1": "eval/f1",
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for label, key in series.items():
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if not points:
            continue
        ax = axes[0] if "reward" in label else axes[1]
        evaluation = label.startswith("eval")
        line = ax.plot(
            *zip(*points),
            marker="o" if evaluation else None,
            markersize=4,
            label=label,
            alpha=1.0 if evaluation or len(points) < 20 else 0.35,
        )[0]
        if not evaluation and len(points) >= 20:  # one step is noisy: add a moving average
            steps, values = zip(*points)
            width = max(5, len(points) // 10)
            smooth = [
                sum(values[max(0, i - width + 1) : i + 1]) / len(values[max(0, i - width + 1) : i + 1])
                for i in range(len(values))
            ]
            ax.plot(steps, smooth, color=line.get_color(), label=f"{label} (mean of {width})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, title in zip(axes, ("reward", "F1")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
