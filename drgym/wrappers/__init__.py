"""Wrappers that give WebResearch-v0 the fixed spaces classic RL libraries expect.

Classic RL on web research
==========================

``drgym/WebResearch-v0`` is a text environment: an action is a whole policy turn. Stable-Baselines3, CleanRL
and most RL research code expect fixed spaces, so :class:`DiscreteResearchWrapper` turns each turn into a choice
among a fixed number of candidate actions built from what the episode has seen so far, and the state into a
vector of float32 features. The questions, search backend, browsing and reward stay those of the text env, so
scores compare with the LLM agents' on the same data. It is a baseline for classic RL research (exploration,
credit assignment over a few turns, action masking), not a competitive research agent: what it can answer is
bounded by the spans its candidate extractor finds.

.. code-block:: python

    import gymnasium as gym
    import drgym  # registers the env ids
    from drgym.wrappers import DiscreteResearchWrapper
    from stable_baselines3 import PPO

    env = DiscreteResearchWrapper(gym.make("drgym/WebResearch-v0", dataset="demo", max_turns=6))
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64).learn(5_000)

Action slots, each turn (``Discrete(1 + n_queries + n_results + n_candidates)``):

=================  ========================================================================
slot               protocol turn sent to the env
=================  ========================================================================
0                  ``web_search`` of the question
1 … n_queries      ``web_search`` of the question plus the k-th best unsearched entity seen
next n_results     ``browse_webpage`` of result i of the latest search
last n_candidates  ``<answer>`` with the j-th best candidate span (``yes``/``no`` for yes/no questions)
=================  ========================================================================

A slot with nothing behind it plays slot 0 (it costs a turn); ``env.action_masks()`` gives the valid slots for
sb3-contrib's ``MaskablePPO``. The observation layout is documented in ``drgym.wrappers._features``.
Both ``stable_baselines3.common.env_checker.check_env`` and gymnasium's ``check_env`` accept the wrapper.

Install the extra for the training example: ``pip install "drgym[sb3]"``; then
``python examples/sb3_ppo.py`` trains PPO on the demo set and compares it with a random policy on held-out
questions, and ``python -m benchmarks.perf.sb3_ppo`` prints the same comparison as a table with env steps/s.
Importing this package needs neither stable-baselines3 nor torch.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from drgym.wrappers.discrete import SLOT_KINDS, Candidate, DiscreteResearchWrapper

__all__ = ["SLOT_KINDS", "Candidate", "DiscreteResearchWrapper", "make_discrete"]


def make_discrete(
    env_id: str = "drgym/WebResearch-v0",
    *,
    n_candidates: int = 5,
    n_queries: int = 3,
    n_results: int = 5,
    n_features: int = 128,
    **make_kwargs: Any,
) -> DiscreteResearchWrapper:
    """``gymnasium.make(env_id, **make_kwargs)`` wrapped in :class:`DiscreteResearchWrapper`.

    Handy as an SB3 ``make_vec_env`` factory: ``make_vec_env(lambda: make_discrete(dataset="demo"), n_envs=4)``.
    """
    import drgym  # noqa: F401  # registers the env ids

    return DiscreteResearchWrapper(
        gym.make(env_id, **make_kwargs),
        n_candidates=n_candidates,
        n_queries=n_queries,
        n_results=n_results,
        n_features=n_features,
    )
