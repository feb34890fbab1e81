"""Evaluation metrics of a benchmark run: per-episode scores, cost counters and bootstrap intervals.

Scores follow the paper's evaluation convention: an episode whose format broke (unbalanced tags, no answer,
or the turn limit reached without one) scores 0 on every metric, and so does an episode the agent or the
environment crashed on. F1 and EM use the paper's normalisation (``drgym.reward``: punctuation becomes a
space, articles kept, F1 over token sets); the SQuAD variants are there because most other QA work reports
them. MBE comes from :mod:`benchmarks.judge`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from drgym.errors import ConfigError
from drgym.reward import em_paper, em_squad, f1_paper, f1_squad, split_gold
from drgym.runner import Trajectory

__all__ = [
    "ANSWER_METRICS",
    "COST_FIELDS",
    "METRIC_NAMES",
    "EpisodeScore",
    "Interval",
    "bootstrap_macro_mean",
    "bootstrap_mean",
    "episode_costs",
    "score_answer",
    "score_trajectory",
]

ANSWER_METRICS: tuple[str, ...] = ("f1", "em", "squad_f1", "squad_em")
"""Metrics computed from the answer alone (MBE needs the judge)."""

METRIC_NAMES: dict[str, str] = {
    "f1": "F1 (paper normalisation)",
    "em": "EM (paper normalisation)",
    "squad_f1": "F1 (SQuAD normalisation)",
    "squad_em": "EM (SQuAD normalisation)",
    "mbe": "MBE (LLM judge)",
}
"""Every metric of a report, in report order, with its heading."""

COST_FIELDS: tuple[str, ...] = (
    "tool_calls",
    "search_calls",
    "pages_read",
    "prompt_tokens",
    "completion_tokens",
    "wall_time_s",
)
"""Per-episode cost counters, averaged per agent in reports."""


@dataclass(frozen=True)
class EpisodeScore:
    """The evaluation scores of one episode.

    ``format_ok`` is False when the policy broke the format or never answered; ``failed`` when the agent or
    the environment raised (the episode was cut short). Either way every metric is 0.
    """

    f1: float
    em: float
    squad_f1: float
    squad_em: float
    format_ok: bool
    failed: bool
    answer: str | None

    @property
    def exact(self) -> bool:
        """True when the answer matches a gold exactly under either normalisation (no judge needed)."""
        return self.em == 1.0 or self.squad_em == 1.0

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, ready for JSON."""
        return asdict(self)


def score_answer(answer: str | None, golds: str | Sequence[str]) -> dict[str, float]:
    """The four answer metrics of ``answer`` against ``golds`` (maximum over golds); no gold scores 0."""
    gold_list = split_gold(golds)
    if not gold_list or answer is None:
        return dict.fromkeys(ANSWER_METRICS, 0.0)
    return {
        "f1": f1_paper(answer, gold_list),
        "em": em_paper(answer, gold_list),
        "squad_f1": f1_squad(answer, gold_list),
        "squad_em": em_squad(answer, gold_list),
    }


def score_trajectory(traj: Trajectory) -> EpisodeScore:
    """Score a finished episode recorded with the env's ``paper`` reward mode.

    In that mode the final reward is −1 exactly when the format broke (or no answer came), so the reward
    tells format failures apart from honest zero-F1 answers without re-parsing the policy's turns.
    """
    failed = traj.error is not None
    ended = traj.terminated or traj.truncated
    format_ok = not failed and ended and traj.reward >= 0.0 and traj.answer is not None
    metrics = score_answer(traj.answer, traj.answers) if format_ok else dict.fromkeys(ANSWER_METRICS, 0.0)
    return EpisodeScore(**metrics, format_ok=format_ok, failed=failed, answer=traj.answer)


def episode_costs(traj: Trajectory) -> dict[str, float | None]:
    """One episode's cost: tool calls, search queries, pages read, tokens (None if unreported), time."""
    prompt = [t.prompt_tokens for t in traj.turns if t.prompt_tokens is not None]
    return {
        "tool_calls": float(traj.tool_calls),
        "search_calls": float(traj.search_calls),
        "pages_read": float(traj.pages_read),
        "prompt_tokens": float(sum(prompt)) if prompt else None,
        "completion_tokens": None if traj.completion_tokens is None else float(traj.completion_tokens),
        "wall_time_s": float(traj.wall_time_s),
    }


# ------------------------------------------------------------------------------------------------ bootstrap


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval ``[lo, hi]`` over ``n`` values."""

    mean: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """A plain dict, ready for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        """The inverse of :meth:`to_dict`."""
        return cls(float(data["mean"]), float(data["lo"]), float(data["hi"]), int(data["n"]))


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


def _as_array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ConfigError("bootstrap values must be a flat sequence of finite numbers")
    return array


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))  # (R, n)
    return values[idx].mean(axis=1)  # (R,)


def _interval(point: float, means: np.ndarray, confidence: float, n: int) -> Interval:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    # The percentile interval contains the point estimate unless resampling is degenerate; clamp float noise.
    return Interval(point, float(min(lo, point)), float(max(hi, point)), n)


def bootstrap_mean(
    values: Sequence[float], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval | None:
    """The mean of ``values`` with a percentile bootstrap interval; None for no values.

    Seeded, so the same values always give the same interval (a rerun of a report does not move the bars).
    """
    _check_bootstrap(n_resamples, confidence)
    array = _as_array(values)
    if array.size == 0:
        return None
    rng = np.random.default_rng(seed)
    return _interval(
        float(array.mean()), _resampled_means(array, n_resamples, rng), confidence, int(array.size)
    )


def bootstrap_macro_mean(
    groups: Mapping[str, Sequence[float]], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval | None:
    """The mean of the group means (each data source weighs the same, like the paper's average column).

    Resampling is stratified: each group is resampled within itself, so every resample keeps every source.
    Empty groups are left out; None when every group is empty.
    """
    _check_bootstrap(n_resamples, confidence)
    arrays = [_as_array(v) for _, v in sorted(groups.items())]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return None
    rng = np.random.default_rng(seed)
    point = float(np.mean([a.mean() for a in arrays]))
    means = np.mean([_resampled_means(a, n_resamples, rng) for a in arrays], axis=0)  # (R,)
    n = int(sum(a.size for a in arrays))
    return _interval(point, means, confidence, n)
