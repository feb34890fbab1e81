"""WebResearch-v0 end to end on the shipped demo corpus and on real data through the mirror."""

from __future__ import annotations

import asyncio
import json

import gymnasium as gym
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drgym
from drgym.agents.scripted import ScriptedAgent
from drgym.errors import ConfigError
from drgym.runner import arun_episodes, run_episode


def search_turn(*queries: str) -> str:
    call = {"name": "web_search", "arguments": {"query": list(queries)}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


def browse_turn(*urls: str) -> str:
    call = {"name": "browse_webpage", "arguments": {"url_list": list(urls)}}
    return f"<think>read</think><tool_call>{json.dumps(call)}</tool_call>"


@pytest.fixture
def env():
    e = gym.make("drgym/WebResearch-v0", dataset="demo")
    yield e
    e.close()


def test_registered_and_passes_check_env(env):
    assert "drgym/WebResearch-v0" in gym.registry
    check_env(env.unwrapped)


def test_check_env_through_make_wrappers(env):
    check_env(env)


def test_reset_is_deterministic_under_seed(env):
    seen = [env.reset(seed=s)[0] for s in range(5)]
    again = [env.reset(seed=s)[0] for s in range(5)]
    assert seen == again
    assert len(set(seen)) > 1, "different seeds should pose different questions"


def test_reset_info_carries_prompt_tools_and_messages(env):
    obs, info = env.reset(options={"index": 0})
    assert obs == info["question"]
    assert "web_search" in info["system_prompt"] and "browse_webpage" in info["system_prompt"]
    assert [t["function"]["name"] for t in info["tools"]] == ["web_search", "browse_webpage"]
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    assert info["messages"][1]["content"] == obs
    assert "answers" not in info, "gold answers must not leak before the episode ends"


def test_reset_with_custom_question(env):
    obs, info = env.reset(options={"question": "Who founded Tollmere?", "answers": ["A<|answer_split|>B"]})
    assert obs == "Who founded Tollmere?"
    *_, info = env.step("<think>guess</think><answer>b</answer>")
    assert info["answers"] == ["A", "B"] and info["f1"] == 1.0


@pytest.mark.parametrize(
    "options",
    [{"index": 10_000}, {"index": "3"}, {"question": ""}, {"bogus": 1}],
)
def test_bad_reset_options_are_clear_errors(env, options):
    with pytest.raises(ConfigError):
        env.reset(options=options)


def test_step_before_reset_raises_reset_needed():
    e = drgym.WebResearchEnv(dataset="demo")
    with pytest.raises(ResetNeeded):
        e.step("<answer>x</answer>")


def test_search_then_answer_scores_f1(env):
    obs, info = env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step(search_turn(obs))
    assert obs.startswith("<tool_response>") and obs.endswith("</tool_response>")
    assert "https://local.drgym/demo/" in obs
    assert reward == 0.0 and not terminated and not truncated
    assert info["tool_calls"] == 1 and info["search_calls"] == 1 and info["format_ok"]
    assert info["messages"][-1]["role"] == "tool"
    assert not info["messages"][-1]["content"].startswith("<tool_response>")
    gold = drgym.WebResearchEnv(dataset="demo").records[0].answers[0]
    obs, reward, terminated, truncated, info = env.step(f"<think>done</think><answer>{gold}</answer>")
    assert terminated and not truncated
    assert reward == info["reward"] == info["f1"] == 1.0 and info["em"] == 1.0
    assert info["answer"] == gold


def test_browse_reads_seen_urls_and_skips_unseen(env):
    obs, _ = env.reset(options={"index": 0})
    obs, *_ = env.step(search_turn(obs))
    url = obs.split("https://local.drgym/", 1)[1].split()[0]
    url = "https://local.drgym/" + url.rstrip(").,")
    obs, _, _, _, info = env.step(browse_turn(url, "https://example.org/never-seen"))
    assert info["pages_read"] == 1
    assert "example.org/never-seen" in obs and "Skipped" in obs


def test_browse_unseen_allowed_when_rule_off():
    e = gym.make("drgym/WebResearch-v0", dataset="demo", browse_only_seen_urls=False)
    e.reset(options={"index": 0})
    url = "https://local.drgym/demo/" + e.unwrapped.backend.passages[0].id  # type: ignore[attr-defined]
    _, _, _, _, info = e.step(browse_turn(url))
    assert info["pages_read"] == 1


def test_format_error_ends_with_minus_one(env):
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("I think the answer is 42.")
    assert terminated and not truncated and reward == -1.0
    assert info["format_ok"] is False and "Error" in obs


def test_format_error_continue_mode_lets_the_policy_recover():
    e = gym.make("drgym/WebResearch-v0", dataset="demo", on_format_error="continue")
    e.reset(options={"question": "q?", "answers": ["yes"]})
    obs, reward, terminated, _truncated, info = e.step("<think>unclosed")
    assert not terminated and reward == 0.0 and info["format_errors"] == 1 and "Error" in obs
    *_, reward, terminated, _, info = e.step("<think>ok</think><answer>yes</answer>")
    assert terminated and reward == 1.0


def test_turn_limit_truncates_with_no_answer_penalty():
    e = gym.make("drgym/WebResearch-v0", dataset="demo", max_turns=2)
    obs, _ = e.reset(options={"index": 1})
    _, _, terminated, truncated, _ = e.step(search_turn(obs))
    assert not terminated and not truncated
    _, reward, terminated, truncated, info = e.step(search_turn("another"))
    assert truncated and not terminated and reward == -1.0 and info["f1"] == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no tags at all",
        "<think>a</think><tool_call>{not json}</tool_call>",
        '<think>a</think><tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        '<think>a</think><tool_call>{"name": "web_search", "arguments": {"query": 7}}</tool_call>',
        "<think>" + "x" * 1_000_000 + "</think><answer>a</answer>",
        "<think>\x00\x07\x1b</think><answer>\x00a\x1b</answer>",
        search_turn("a") + search_turn("b"),
        "<answer><answer>x</answer>",
    ],
)
def test_malformed_turns_never_raise(env, text):
    env.reset(seed=1)
    obs, reward, _terminated, _truncated, info = env.step(text)
    assert isinstance(obs, str) and env.observation_space.contains(obs)
    assert -1.0 <= reward <= 1.0
    assert isinstance(info["format_ok"], bool)


def test_tool_errors_teach_and_continue(env):
    env.reset(seed=1)
    obs, reward, terminated, _, info = env.step(
        '<think>a</think><tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    )
    assert not terminated and reward == 0.0 and info["tool_errors"] == 1
    assert "web_search" in obs  # the message lists the valid tools


def test_non_string_action_is_a_type_error(env):
    env.reset(seed=0)
    with pytest.raises(TypeError, match="str"):
        env.unwrapped.step(123)


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(ConfigError, match="demo"):
        gym.make("drgym/WebResearch-v0", dataset="hotpot-dev500")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_turns": 0}, {"reward_mode": "bleu"}, {"on_format_error": "explode"}, {"search": "bing"}],
)
def test_bad_options_are_clear_errors(kwargs):
    with pytest.raises(ConfigError):
        gym.make("drgym/WebResearch-v0", dataset="demo", **kwargs)


def test_scripted_agent_plays_demo_episodes(env):
    total = 0.0
    for i in range(5):
        traj = run_episode(env, ScriptedAgent(), options={"index": i})
        assert traj.error is None and traj.terminated
        assert [t.tool for t in traj.turns[:2]] == ["web_search", "browse_webpage"]
        total += traj.f1
    assert total > 0.0, "the scripted agent should answer some demo questions"


async def test_async_api_runs_many_episodes_on_one_loop():
    trajectories = await arun_episodes(
        lambda: gym.make("drgym/WebResearch-v0", dataset="demo"), ScriptedAgent, episodes=24, seed=3, concurrency=8
    )
    assert len(trajectories) == 24 and all(t.error is None for t in trajectories)
    again = await arun_episodes(
        lambda: gym.make("drgym/WebResearch-v0", dataset="demo"), ScriptedAgent, episodes=24, seed=3, concurrency=3
    )
    assert [t.record_id for t in trajectories] == [t.record_id for t in again]
    assert [t.f1 for t in trajectories] == [t.f1 for t in again]


async def test_astep_on_callers_loop():
    e = drgym.WebResearchEnv(dataset="demo")
    obs, _ = await e.areset(options={"index": 2})
    obs, *_ = await e.astep(search_turn(obs))
    assert "local.drgym" in obs
    assert asyncio.get_running_loop() is not None


@pytest.mark.usefixtures("data_mirror")
def test_scripted_agent_on_hotpotqa_via_mirror():
    e = gym.make("drgym/WebResearch-v0", dataset="hotpotqa-dev500")
    trajs = [run_episode(e, ScriptedAgent(), options={"index": i}) for i in range(8)]
    assert all(t.error is None and t.terminated for t in trajs)
    assert all(t.search_calls == 1 and t.pages_read >= 1 for t in trajs)
    assert sum(t.f1 for t in trajs) > 0.0


def test_import_and_make_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, drgym\n"
        "e = gym.make('drgym/WebResearch-v0', dataset='demo'); e.reset(seed=0)\n"
        "e.step('<think>a</think><answer>b</answer>')\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_reader_accepts_a_chat_client_and_rejects_junk():
    from drgym.browse import BrowsingAgent, LexicalReader

    class Echo:
        async def complete(self, messages, **sampling):
            raise NotImplementedError

    assert isinstance(drgym.WebResearchEnv(dataset="demo").reader, LexicalReader)
    assert isinstance(drgym.WebResearchEnv(dataset="demo", reader=Echo()).reader, BrowsingAgent)
    with pytest.raises(ConfigError, match="reader"):
        drgym.WebResearchEnv(dataset="demo", reader=42)


def test_tool_steps_are_deterministic_for_check_env():
    """check_env only samples random text (format errors); a real tool step must be deterministic too."""
    from gymnasium.utils.env_checker import data_equivalence

    def play():
        e = gym.make("drgym/WebResearch-v0", dataset="demo")
        obs, _ = e.reset(seed=7)
        out = [e.step(search_turn(obs))]
        url = "https://local.drgym/" + out[0][0].split("https://local.drgym/", 1)[1].split()[0]
        out.append(e.step(browse_turn(url)))
        return out

    first, second = play(), play()
    assert data_equivalence(first, second, exact=True)


_TURN_PARTS = st.sampled_from(
    [
        search_turn("Tollmere founder"),
        browse_turn("https://local.drgym/demo/x"),
        "<think>done</think><answer>Ilse Varrow</answer>",
        "<think>hm</think><answer>the Tollmere</answer>",
        "<think>unclosed",
        "<think>a</think>",
        '<think>a</think><tool_call>{"name": "nope", "arguments": {}}</tool_call>',
        "<answer>x</answer><answer>y",
        "plain text",
        "<think>x</think><tool_call>{broken</tool_call>",
        "<think>I know <answer>Ilse Varrow</answer> so</think>",
        "<think>done</think><answer>Ilse\rVarrow</answer>",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(_TURN_PARTS, min_size=1, max_size=5), mode=st.sampled_from(["end", "continue"]))
def test_env_reward_equals_scoring_the_policy_turns(env_factory, turns, mode):
    """The env scores from what it parsed turn by turn; that must equal the paper's rule on the whole text."""
    from drgym.reward import score_episode

    e = env_factory(mode)
    e.reset(options={"question": "Who founded Tollmere?", "answers": ["Ilse Varrow"]})
    scored: list[str] = []
    for turn in turns:
        _, reward, terminated, truncated, info = e.step(turn)
        if info["format_ok"] or mode == "end":
            scored.append(turn)
        if terminated or truncated:
            expected = score_episode(scored, ["Ilse Varrow"], max_chars=e.unwrapped.max_action_chars)
            assert (reward, info["f1"], info["em"]) == (expected.reward, expected.f1, expected.em)
            return


@pytest.mark.parametrize(
    ("turn", "reward"),
    [
        ("<think>I know <answer>Ilse Varrow</answer> so</think>", -1.0),  # the think is open at </answer>
        ("<think>done</think><answer>Ilse Varrow</answer></think>", -1.0),  # a stray tag anywhere breaks it
        ("<think>done</think><answer>Ilse Varrow</answer><tool_response>x", 1.0),  # recorded cut, same score
        ("<think>done</think><answer>Ilse\x85Varrow</answer>", 1.0),  # a whitespace control separates words
    ],
)
def test_what_the_env_records_scores_as_the_env_rewarded(env_factory, turn, reward):
    from drgym.reward import score_episode

    e = env_factory("end")
    e.reset(options={"question": "Who founded Tollmere?", "answers": ["Ilse Varrow"]})
    _, got, terminated, _, info = e.step(turn)
    recorded = [m["content"] for m in info["messages"] if m["role"] == "assistant"]
    assert terminated and got == reward
    assert score_episode(recorded, ["Ilse Varrow"]).reward == reward
    assert score_episode([turn], ["Ilse Varrow"]).reward == reward


def test_a_too_long_turn_is_recorded_as_too_long():
    from drgym.reward import score_episode

    e = drgym.WebResearchEnv(dataset="demo", max_action_chars=64, on_format_error="end")
    e.reset(options={"question": "Who founded Tollmere?", "answers": ["Ilse Varrow"]})
    turn = "<think>" + "x" * 80 + "</think><answer>Ilse Varrow</answer>"
    _, reward, terminated, _, info = e.step(turn)
    recorded = [m["content"] for m in info["messages"] if m["role"] == "assistant"]
    assert terminated and reward == -1.0 and len(recorded[0]) == 65
    assert score_episode(recorded, ["Ilse Varrow"], max_chars=64).reward == -1.0
    e.close()


@pytest.fixture
def env_factory():
    made = {m: drgym.WebResearchEnv(dataset="demo", on_format_error=m, max_turns=3) for m in ("end", "continue")}
    return made.__getitem__


class _BrokenBackend:
    """A backend with a bug (not a typed drgym error): the episode must survive it."""

    name = "broken"

    async def search(self, query: str, k: int = 10):
        raise ZeroDivisionError("bug")

    async def open(self, url: str):
        raise KeyError(url)

    async def aclose(self) -> None:
        return None


def test_a_backend_bug_becomes_an_error_observation():
    e = drgym.WebResearchEnv(dataset="demo", search=_BrokenBackend())
    e.reset(options={"index": 0})
    obs, _reward, terminated, _truncated, info = e.step(search_turn("x"))
    assert not terminated and "failed unexpectedly" in obs and info["backend_errors"] == 1
    *_, terminated, _, info = e.step("<think>ok</think><answer>a</answer>")
    assert terminated
