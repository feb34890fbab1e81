"""Held-out evaluation of policies on the discrete wrapper: a train/test split by index and a scoring loop.

Kept free of any RL library so an SB3 model, a random policy and a hand-written rule are scored by the same
code on the same questions (``examples/sb3_ppo.py`` and ``benchmarks/perf/sb3_ppo.py`` both use it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from drgym.errors import ConfigError
from drgym.wrappers.discrete import DiscreteResearchWrapper

__all__ = ["Evaluation", "Policy", "evaluate", "first_answer_policy", "random_policy", "split_indices"]

Policy = Callable[[np.ndarray, DiscreteResearchWrapper], int]
"""A policy for evaluation: (observation, env) -> action index. The env is passed for ``action_masks()``."""


@dataclass(frozen=True)
class Evaluation:
    """Scores of one policy over a set of questions (one episode each).

    Attributes:
        episodes: Episodes played.
        mean_reward: Mean episode reward (paper mode: F1, or −1 when unanswered).
        mean_f1: Mean word-level F1 of the answers (0 when unanswered).
        answered: Fraction of episodes that ended with an answer.
        mean_turns: Mean turns per episode.
    """

    episodes: int
    mean_reward: float
    mean_f1: float
    answered: float
    mean_turns: float


def split_indices(n: int, test_fraction: float = 0.2, *, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded shuffle of ``range(n)`` cut into (train, test); both sorted, both non-empty."""
    if n < 2:
        raise ConfigError(f"a train/test split needs at least 2 questions, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    return sorted(int(i) for i in order[n_test:]), sorted(int(i) for i in order[:n_test])


def evaluate(env: DiscreteResearchWrapper, policy: Policy, indices: Sequence[int]) -> Evaluation:
    """Play one episode per dataset index (``reset(options={"index": i})``) and average the scores."""
    if not indices:
        raise ConfigError("evaluate needs at least one question index")
    rewards, f1s, answered, turns = [], [], [], []
    for index in indices:
        obs, _ = env.reset(options={"index": int(index)})
        terminated = truncated = False
        total, info = 0.0, {}
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(policy(obs, env))
            total += reward
        rewards.append(total)
        f1s.append(float(info.get("f1", 0.0)))
        answered.append(float(terminated and info.get("action", {}).get("kind") == "answer"))
        turns.append(int(info.get("turn", 0)))
    return Evaluation(
        episodes=len(rewards),
        mean_reward=float(np.mean(rewards)),
        mean_f1=float(np.mean(f1s)),
        answered=float(np.mean(answered)),
        mean_turns=float(np.mean(turns)),
    )


def random_policy(seed: int = 0, *, masked: bool = False) -> Policy:
    """Uniform over all slots, or over the valid slots only (``masked=True``); seeded, so reproducible."""
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, env: DiscreteResearchWrapper) -> int:
        if masked:
            return int(rng.choice(np.flatnonzero(env.action_masks())))
        return int(rng.integers(env.action_space.n))

    return act


def first_answer_policy(obs: np.ndarray, env: DiscreteResearchWrapper) -> int:
    """A fixed rule for reference: search the question, then answer with the best-ranked candidate span."""
    answer_slot = int(env.action_space.n) - env.n_candidates
    return answer_slot if env.action_masks()[answer_slot] else 0
