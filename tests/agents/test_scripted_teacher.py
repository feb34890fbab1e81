"""The scripted agent as a noisy teacher: it reads the named result, or (at a set rate) a wrong one."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

import drgym  # noqa: F401  (registers the env ids)
from drgym.agents.scripted import ScriptedAgent, search_results
from drgym.data.synthetic import make_synthetic_task
from drgym.errors import ConfigError
from drgym.runner import run_episode
from drgym.search.local import BM25Backend

N = 40


@pytest.fixture(scope="module")
def ring_env():
    records, passages = make_synthetic_task(N, seed=5, kinds=("population",), neighbours=True)
    backend = BM25Backend(passages, corpus="synthetic", cache=False)
    env = gym.make("drgym/WebResearch-v0", dataset=records, search=backend, max_turns=3, results_per_query=3)
    yield env, records, {p.title: p for p in passages}
    env.close()


def _answers(env, agent):
    out = []
    for i in range(N):
        traj = run_episode(env, agent, options={"index": i})
        out.append((traj.answer, traj.reward))
    return out


def test_named_result_only_answers_every_ring_question(ring_env):
    env, records, _ = ring_env
    answers = _answers(env, ScriptedAgent(pages_to_read=0, named_result_only=True))
    assert [a for a, _ in answers] == [r.answers[0] for r in records]
    # reading all results instead, a population question still gets a number (not a neighbour's name), and the
    # asked town's sentence, which shares the most words with the question, supplies it
    plain = _answers(env, ScriptedAgent(pages_to_read=0))
    assert all(a.isdigit() for a, _ in plain)
    assert sum(a == r.answers[0] for (a, _), r in zip(plain, records)) > N // 2


def test_wrong_result_rate_copies_a_neighbours_value(ring_env):
    env, records, by_title = ring_env
    always = _answers(env, ScriptedAgent(pages_to_read=0, named_result_only=True, wrong_result_rate=1.0))
    for (answer, reward), r in zip(always, records):
        town = by_title[r.question.removeprefix("What is the population of ").removesuffix("?")]
        before, after = re.match(r"\w+ lies between (\w+) and (\w+)\.", town.text).groups()
        neighbour_values = {re.search(r"is (\d+)\.$", by_title[t].text).group(1) for t in (before, after)}
        assert answer in neighbour_values and reward == 0.0  # a value copied from a wrong result
    half = _answers(env, ScriptedAgent(pages_to_read=0, named_result_only=True, wrong_result_rate=0.5))
    right = sum(reward == 1.0 for _, reward in half)
    assert 10 <= right <= 30  # about half of 40
    again = _answers(env, ScriptedAgent(pages_to_read=0, named_result_only=True, wrong_result_rate=0.5))
    assert again == half  # a pure function of (seed, question)
    other = _answers(
        env, ScriptedAgent(pages_to_read=0, named_result_only=True, wrong_result_rate=0.5, seed=1)
    )
    assert other != half


def test_wrong_result_last_copies_the_lowest_ranked_other_result(ring_env):
    env, records, _ = ring_env
    agent = ScriptedAgent(pages_to_read=0, named_result_only=True, wrong_result_rate=1.0, wrong_result="last")
    for i, r in enumerate(records):
        traj = run_episode(env, agent, options={"index": i})
        results = search_results(traj.turns[0].observation)
        asked = r.question.removeprefix("What is the population of ").removesuffix("?")
        last_other = [text for title, text in results if title != asked][-1]
        assert re.search(rf"is {traj.answer}\.", last_other) and traj.reward == 0.0
    # at the same rate and seed, "last" is wrong on exactly the questions "random" is wrong on
    kwargs = {"pages_to_read": 0, "named_result_only": True, "wrong_result_rate": 0.6}
    rand = _answers(env, ScriptedAgent(**kwargs))
    last = _answers(env, ScriptedAgent(**kwargs, wrong_result="last"))
    assert [rw for _, rw in rand] == [rw for _, rw in last]
    assert [a for a, _ in rand] != [a for a, _ in last]


def test_vague_query_rate_leaves_a_word_out_and_answers_from_what_it_found():
    records, passages = make_synthetic_task(N, seed=5, kinds=("population",), neighbours=True, name_pool=12, value_pool=48)
    backend = BM25Backend(passages, corpus="synthetic", cache=False)
    env = gym.make("drgym/WebResearch-v0", dataset=records, search=backend, max_turns=3, results_per_query=1)
    try:
        exact = _answers(env, ScriptedAgent(pages_to_read=0, named_result_only=True))
        assert all(reward == 1.0 for _, reward in exact)  # the question itself finds the asked town first
        vague = ScriptedAgent(pages_to_read=0, named_result_only=True, vague_query_rate=1.0)
        rewards = []
        for i, r in enumerate(records):
            traj = run_episode(env, vague, options={"index": i})
            query = traj.turns[0].arguments["query"][0]
            first, _ = r.question.removeprefix("What is the population of ").removesuffix("?").split(" ")
            assert query == f"What is the population of {first}?"  # the last word is left out
            ((_, text),) = search_results(traj.turns[0].observation)
            assert re.search(rf"is {traj.answer}\.", text)  # it answers from the one result it found
            rewards.append(traj.reward)
        assert sum(rewards) <= N // 3  # another town sharing the word, most of the time
        half = [rw for _, rw in _answers(env, ScriptedAgent(pages_to_read=0, named_result_only=True,
                                                            vague_query_rate=0.5))]
        assert sum(rewards) < sum(half) < N  # vague on some questions, not on all
    finally:
        env.close()


@pytest.mark.parametrize("rate", [-0.1, 1.5, True])
def test_bad_vague_query_rate(rate):
    with pytest.raises(ConfigError, match=re.escape(f"`vague_query_rate` must be a number in [0, 1], got {rate!r}")):
        ScriptedAgent(vague_query_rate=rate)


def test_bad_wrong_result_choice():
    with pytest.raises(ConfigError, match=re.escape("`wrong_result` must be one of ['random', 'last'], got 'first'")):
        ScriptedAgent(wrong_result="first")


def test_search_results_split_a_rendered_observation():
    text = (
        'Results for query "q":\n1. Alpha\n   URL: https://x/a\n   A text.\n'
        "2. Beta Gamma\n   URL: https://x/b\n   B text."
    )
    (t1, b1), (t2, b2) = search_results(text)
    assert (t1, t2) == ("Alpha", "Beta Gamma") and "A text." in b1 and "B text." in b2 and "A text" not in b2
    assert search_results("No results for query.") == []


@pytest.mark.parametrize("rate", [-0.1, 1.5, "half", True])
def test_bad_wrong_result_rate(rate):
    with pytest.raises(ConfigError, match=re.escape(f"`wrong_result_rate` must be a number in [0, 1], got {rate!r}")):
        ScriptedAgent(wrong_result_rate=rate)


def test_quote_evidence_thinks_the_sentence_its_answer_is_read_from(ring_env):
    env, records, by_title = ring_env
    for rate in (0.0, 1.0):
        agent = ScriptedAgent(pages_to_read=0, named_result_only=True, wrong_result_rate=rate, quote_evidence=True)
        for i in range(N):
            traj = run_episode(env, agent, options={"index": i})
            final = traj.turns[-1].action
            thought = re.search(r"<think>(.*)</think>", final).group(1)
            assert thought.endswith(f" is {traj.answer}.") and thought.startswith("The population of ")
            town = thought.removeprefix("The population of ").removesuffix(f" is {traj.answer}.")
            assert thought in by_title[town].text  # a sentence of the passage the value came from
            asked = records[i].question.removeprefix("What is the population of ").removesuffix("?")
            assert (town == asked) == (rate == 0.0)  # the wrong-result teacher quotes a neighbour's passage
