"""``max_observation_chars`` holds for every observation: tool responses, errors and the question at reset."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drgym  # noqa: F401  (registers the env ids)
from drgym import protocol
from drgym._observation import fit_tool_response
from drgym.env import WebResearchEnv

MARK = "[... cut to fit the observation limit]"
# Text that tag escaping lengthens (``<answer>`` becomes ``&lt;answer&gt;``), besides plain and non-Latin text.
CONTENT = st.lists(
    st.sampled_from(["a", " ", "\n", "é", "中", "<answer>", "</tool_response>", "<|im_end|>", "<think", "&"]),
    max_size=120,
).map("".join)


def _search(*queries: str) -> str:
    call = {"name": "web_search", "arguments": {"query": list(queries)}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


@given(content=CONTENT, limit=st.integers(min_value=1, max_value=600))
@settings(max_examples=400, deadline=None)
def test_a_cut_tool_response_fits_the_limit(content: str, limit: int) -> None:
    kept, observation = fit_tool_response(content, limit)
    assert len(observation) <= limit
    whole = protocol.wrap_tool_response(content)
    if len(whole) <= limit:
        assert (kept, observation) == (content, whole), "what fits is not touched"
    elif observation.endswith(MARK + "\n</tool_response>"):
        assert observation == protocol.wrap_tool_response(kept) and content.startswith(kept[: -len(MARK) - 1])


def test_the_cut_is_exact_at_the_default_limit() -> None:
    _, observation = fit_tool_response("x" * 250_000, 100_000)
    assert len(observation) == 100_000 and observation.endswith(MARK + "\n</tool_response>")


_ENVS: dict[int, WebResearchEnv] = {}


def _env(limit: int) -> WebResearchEnv:
    if limit not in _ENVS:
        _ENVS[limit] = WebResearchEnv(dataset="demo", max_observation_chars=limit, on_format_error="continue")
    return _ENVS[limit]


@given(
    limit=st.sampled_from([1, 8, 33, 50, 63, 64, 65, 80, 120, 400, 2_000]),
    question=st.text(min_size=1, max_size=3_000).filter(str.strip),
    query=st.sampled_from(["Tollmere", "tidal clock inventor", "lighthouse keeper Ilse Varrow"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_observation_of_an_episode_is_in_the_space(limit: int, question: str, query: str) -> None:
    env = _env(limit)
    obs, info = env.reset(options={"question": question, "answers": ["a"]})
    assert env.observation_space.contains(obs) and info["question"] == question.strip()
    assert info["messages"][1]["content"] == obs
    for action in (
        _search(query),
        "no tags at all",
        _search(query, "Ilse Varrow", "tidal"),
        "<answer>a</answer>",
    ):
        obs, *_, info = env.step(action)
        assert env.observation_space.contains(obs), (limit, len(obs))


def test_the_question_is_cut_at_reset() -> None:
    env = _env(100)
    obs, info = env.reset(options={"question": "Why " * 100, "answers": ["a"]})
    assert len(obs) == 100 and obs.endswith(MARK) and info["question"] == ("Why " * 100).strip()


@pytest.mark.parametrize("limit", [40, 80])
def test_check_env_passes_with_a_small_limit(limit: int) -> None:
    env = gym.make("drgym/WebResearch-v0", dataset="demo", max_observation_chars=limit)
    check_env(env.unwrapped)
    env.close()
