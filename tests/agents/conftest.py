"""Fixtures for the agents' tests: demo environments, the tiny real model, loopback servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import pytest

import drgym  # noqa: F401  (registers the env ids)
from drgym.data import load_dataset


@pytest.fixture
def make_env() -> Callable[..., gym.Env]:
    """``make_env(**kw)``: a demo-dataset env over the local BM25 backend; closed after the test."""
    envs: list[gym.Env] = []

    def make(**kwargs: Any) -> gym.Env:
        env = gym.make("drgym/WebResearch-v0", dataset="demo", today="2025-01-15", **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


@pytest.fixture(scope="session")
def demo_answers() -> dict[str, str]:
    """Question -> first gold answer, for the demo dataset."""
    return {r.question: r.answers[0] for r in load_dataset("demo")}

