"""Training metrics: per-step summaries of the rollouts, JSONL and TensorBoard sinks, and the final plot.

Names are grouped CleanRL-style: ``rollout/…`` (what the policy did), ``losses/…`` (the update), ``charts/…``
(learning rate, throughput, timing) and ``eval/…`` (greedy episodes on held-out questions).
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
    from .rollout import Rollout

__all__ = ["MetricsLogger", "plot_curves", "read_metrics", "rollout_metrics"]

logger = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def rollout_metrics(rollouts: Sequence[Rollout], prefix: str = "rollout") -> dict[str, float]:
    """Reward, F1, EM, format-error and truncation rates, tool calls, turns and response length of a batch."""
    if not rollouts:
        return {}
    rewards = [r.reward for r in rollouts]
    return {
        f"{prefix}/reward_mean": _mean(rewards),
        f"{prefix}/reward_std": float(statistics.pstdev(rewards)) if len(rewards) > 1 else 0.0,
        f"{prefix}/f1": _mean([r.f1 for r in rollouts]),
        f"{prefix}/em": _mean([r.em for r in rollouts]),
        f"{prefix}/format_error_rate": _mean([0.0 if r.format_ok else 1.0 for r in rollouts]),
        f"{prefix}/answered_rate": _mean([1.0 if r.answered else 0.0 for r in rollouts]),
        f"{prefix}/truncated_rate": _mean([1.0 if r.truncated else 0.0 for r in rollouts]),
        f"{prefix}/error_rate": _mean([1.0 if r.error else 0.0 for r in rollouts]),
        f"{prefix}/tool_calls": _mean([r.tool_calls for r in rollouts]),
        f"{prefix}/turns": _mean([len(r.turns) for r in rollouts]),
        f"{prefix}/response_tokens": _mean([r.policy_tokens for r in rollouts]),
        f"{prefix}/sequence_tokens": _mean([len(r.input_ids) for r in rollouts]),
    }


class MetricsLogger:
    """Writes one JSON line per step to ``metrics.jsonl`` and, when asked, TensorBoard scalars.

    On resume, lines after the resumed step are dropped first (written after the last checkpoint by a run that
    then crashed), so the file holds each step once.

    Args:
        path: The JSONL file.
        tensorboard_dir: Event directory, or ``None`` for no TensorBoard.
        resume_step: The step the run resumes after (``None``: a fresh run, the file starts empty).
    """

    def __init__(
        self, path: str | Path, tensorboard_dir: str | Path | None = None, resume_step: int | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = (
            [m for m in read_metrics(self.path) if m.get("step", 0) <= resume_step]
            if resume_step is not None
            else []
        )
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(m) + "\n" for m in kept)
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed; metrics go to %s only", self.path)
            else:
                self._writer = SummaryWriter(str(tensorboard_dir), purge_step=(resume_step or 0) + 1)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append a step's metrics (non-finite values are written as null in JSON)."""
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
