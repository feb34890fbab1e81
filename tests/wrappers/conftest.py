"""Fixtures of the wrapper tests: the discrete wrapper over the shipped demo set (no download)."""

from __future__ import annotations

import gymnasium as gym
import pytest

import drgym  # noqa: F401  # registers the env ids
from drgym.wrappers import DiscreteResearchWrapper


@pytest.fixture
def env():
    wrapped = DiscreteResearchWrapper(gym.make("drgym/WebResearch-v0", dataset="demo", max_turns=6))
    yield wrapped
    wrapped.close()
