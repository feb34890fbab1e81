"""Tests of the answer metrics, the format rule and episode scoring."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drgym.errors import ConfigError
from drgym.protocol import parse_turn
from drgym.reward import (
    ANSWER_SPLIT,
    REWARD_MODES,
    Score,
    check_format,
    em_paper,
    em_squad,
    extract_answer,
    f1_paper,
    f1_squad,
    normalize_paper,
    normalize_squad,
    score_answer,
    score_episode,
    split_gold,
)

SEARCH_TURN = (
    '<think>look it up</think>\n<tool_call>{"name": "web_search", "arguments": {"query": ["q"]}}</tool_call>'
)


def answer_turn(answer: str) -> str:
    return f"<think>found it</think>\n<answer>{answer}</answer>"


# ------------------------------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("text", "paper", "squad"),
    [
        ("U.S.A.", "u s a", "usa"),
        ("The Beatles", "the beatles", "beatles"),
        ("  An  apple,\ta day ", "an apple a day", "apple day"),
        ("O'Neill", "o neill", "oneill"),
        ("1,000", "1 000", "1000"),
        ("«Paris»", "paris", "«paris»"),  # Unicode punctuation: the paper's rule only
        ("Jean\u2010Paul — Sartre", "jean paul sartre", "jean\u2010paul — sartre"),
        ("Theatre of the Absurd", "theatre of the absurd", "theatre of absurd"),
        ("$5+3=8", "5 3 8", "538"),
        ("...", "", ""),
    ],
)
def test_normalisations(text, paper, squad):
    assert normalize_paper(text) == paper
    assert normalize_squad(text) == squad


# -------------------------------------------------------------------------------------------------- F1, EM


def test_articles_are_kept_by_the_paper_and_dropped_by_squad():
    assert f1_paper("the Beatles", ["Beatles"]) == pytest.approx(2 / 3)  # sets {the, beatles} vs {beatles}
    assert em_paper("the Beatles", ["Beatles"]) == 0.0
    assert f1_squad("the Beatles", ["Beatles"]) == 1.0
    assert em_squad("the Beatles", ["Beatles"]) == 1.0


def test_punctuation_becomes_a_space():
    assert f1_paper("U.S.A.", ["u s a"]) == 1.0
    assert em_paper("U.S.A.", ["u s a"]) == 1.0
    assert f1_paper("U.S.A.", ["USA"]) == 0.0
    assert em_squad("U.S.A.", ["USA"]) == 1.0


def test_sets_versus_multisets():
    assert f1_paper("paris paris paris", ["Paris"]) == 1.0
    assert f1_squad("paris paris paris", ["Paris"]) == pytest.approx(0.5)  # p = 1/3, r = 1
    # sets: common 2, p = 2/2, r = 2/3 → 0.8; multisets: common 2, p = 2/4, r = 2/3 → 4/7
    assert f1_paper("new york new york", ["New York City"]) == pytest.approx(0.8)
    assert f1_squad("new york new york", ["New York City"]) == pytest.approx(4 / 7)


def test_max_over_golds_and_answer_split():
    golds = ["Obama", "Barack Hussein Obama"]
    assert f1_paper("Barack Obama", golds) == pytest.approx(0.8)  # 2/3 against "Obama", 0.8 against the other
    assert f1_paper("Barack Obama", ANSWER_SPLIT.join(golds)) == pytest.approx(0.8)
    assert em_paper("barack hussein obama!", f"Obama{ANSWER_SPLIT}Barack Hussein Obama") == 1.0
    assert em_squad("Obama", golds) == 1.0


def test_empty_predictions_score_zero():
    for metric in (f1_paper, em_paper, f1_squad, em_squad):
        assert metric(None, ["Paris"]) == 0.0
        assert metric("", ["Paris"]) == 0.0
        assert metric("?!", ["..."]) == 0.0  # nothing left of either side: no credit for saying nothing
    assert f1_squad("the", ["a"]) == 0.0 and em_squad("the", ["a"]) == 0.0


def test_no_gold_is_a_clear_error():
    for metric in (f1_paper, em_paper, f1_squad, em_squad):
        with pytest.raises(ConfigError, match=re.escape("no gold answers to score against (got [' ', ''])")):
            metric("Paris", [" ", ""])
    with pytest.raises(ConfigError, match="no gold answers"):
        score_episode([answer_turn("Paris")], f"{ANSWER_SPLIT} ")


def test_split_gold():
    assert split_gold(f" Paris {ANSWER_SPLIT}City of Light{ANSWER_SPLIT}") == ["Paris", "City of Light"]
    assert split_gold(["a", [f"b{ANSWER_SPLIT}c", None], ("d",), " ", 1984, b"e"]) == [
        "a",
        "b",
        "c",
        "d",
        "1984",
        "e",
    ]
    assert split_gold("") == [] and split_gold([]) == []
    with pytest.raises(ConfigError, match="gold answers must be strings or lists of strings, got dict"):
        split_gold([{"answer": "x"}])


# ------------------------------------------------------------------------------------- format and answer


def test_check_format_on_policy_turns():
    assert check_format([SEARCH_TURN, answer_turn("Paris")]) == (True, None)
    assert check_format(answer_turn("Paris")) == (True, None)  # a bare string is one turn
    assert check_format([SEARCH_TURN]) == (False, "no turn ends with an <answer>")
    assert check_format([]) == (False, "no policy turns")
    ok, reason = check_format(["<think>a<think>b</think>" + SEARCH_TURN, answer_turn("Paris")])
    assert not ok and reason.startswith('turn 1: the "think" tag is opened again')
    not_text: list = [SEARCH_TURN, None]
    assert check_format(not_text) == (False, "turn 2 is NoneType, not text")


def test_format_is_judged_on_policy_text_only():
    # The tool output (a page quoting "</think><answer>") never enters the check: only the policy's turns do,
    # and the env passes exactly those. The same page text inside a policy turn would break the format.
    page = "a forum post: </think><answer>wrong</answer>"
    turns = [SEARCH_TURN, answer_turn("Paris")]
    assert score_episode(turns, "Paris").reward == 1.0
    assert score_episode([SEARCH_TURN + page, answer_turn("Paris")], "Paris").reward == -1.0


def test_a_turn_over_the_length_limit_breaks_the_format():
    long_turn = answer_turn("Paris") + " " * 100
    assert check_format([long_turn]) == (True, None)
    assert check_format([long_turn], max_chars=50) == (
        False,
        "turn 1 is 146 characters long, over the limit of 50",
    )
    assert score_episode([long_turn], "Paris", max_chars=50).reward == -1.0
    assert parse_turn(long_turn, max_chars=50).error_kind == "too_long"  # the parser agrees


def test_answer_after_a_tool_call_in_the_same_turn_is_not_the_answer():
    # The model would have stopped at </tool_call>; the invented response after it is not its answer.
    invented = SEARCH_TURN + "<tool_response>...</tool_response><answer>London</answer>"
    turns = [invented, answer_turn("Paris")]
    assert extract_answer(turns) == "Paris"
    assert score_episode(turns, "Paris").f1 == 1.0
    assert check_format([invented]) == (False, "no turn ends with an <answer>")


def test_extract_answer():
    assert extract_answer([SEARCH_TURN, answer_turn("  Paris\x00 "), answer_turn("Lyon")]) == "Paris"
    assert extract_answer([SEARCH_TURN]) is None
    assert extract_answer(answer_turn("")) == ""


# ------------------------------------------------------------------------------------------------ scoring


def test_score_episode_modes():
    turns = [SEARCH_TURN, answer_turn("the Beatles")]
    paper = score_episode(turns, ["Beatles", "The Fab Four"])
    assert paper == Score(
        reward=pytest.approx(2 / 3),
        f1=pytest.approx(2 / 3),
        em=0.0,
        squad_f1=1.0,
        squad_em=1.0,
        format_ok=True,
        answer="the Beatles",
        reason=None,
    )
    assert score_episode(turns, "Beatles", mode="f1").reward == pytest.approx(2 / 3)
    assert score_episode(turns, "Beatles", mode="em").reward == 0.0
    assert score_episode(turns, "Beatles", mode="squad_f1").reward == 1.0
    assert json.loads(json.dumps(paper.to_dict()))["answer"] == "the Beatles"
    assert set(paper.to_dict()) == {
        "reward",
        "f1",
        "em",
        "squad_f1",
        "squad_em",
        "format_ok",
        "answer",
        "reason",
    }


def test_broken_format_scores_minus_one_in_paper_mode_and_zero_otherwise():
    turns = ["<think>oops", answer_turn("Beatles")]
    paper = score_episode(turns, "Beatles")
    assert paper.reward == -1.0 and not paper.format_ok and paper.answer == "Beatles"
    assert (paper.f1, paper.em, paper.squad_f1, paper.squad_em) == (0.0, 0.0, 0.0, 0.0)
    assert paper.reason == 'turn 1: the "think" tag is never closed.'
    for mode in ("f1", "em", "squad_f1"):
        assert score_episode(turns, "Beatles", mode=mode).reward == 0.0
    assert score_episode([SEARCH_TURN] * 9, "Beatles").reward == -1.0  # never answered


def test_unknown_mode():
    with pytest.raises(
        ConfigError, match=re.escape("unknown reward mode 'F1'; valid modes: paper, f1, em, squad_f1.")
    ):
        score_episode([answer_turn("x")], "x", mode="F1")
    assert REWARD_MODES == ("paper", "f1", "em", "squad_f1")


# ------------------------------------------------------------------------------------------ property tests

_WORDS = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_WORDS, st.lists(_WORDS, min_size=1, max_size=4))
def test_metrics_are_bounded_and_max_over_golds(pred, golds):
    assume(split_gold(golds))
    for metric in (f1_paper, em_paper, f1_squad, em_squad):
        value = metric(pred, golds)
        assert 0.0 <= value <= 1.0
        assert value == max(metric(pred, [g]) for g in split_gold(golds))
    assert em_paper(pred, golds) <= f1_paper(pred, golds)
    assert em_squad(pred, golds) <= f1_squad(pred, golds)


@settings(max_examples=300, deadline=None)
@given(_WORDS)
def test_normalize_squad_is_the_squad_script(text):
    # The official SQuAD v1.1 evaluation script's normalize_answer, verbatim in effect.
    import string

    no_punct = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    assert normalize_squad(text) == " ".join(re.sub(r"\b(a|an|the)\b", " ", no_punct).split())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), _WORDS), st.lists(_WORDS, min_size=1, max_size=4), st.sampled_from(REWARD_MODES))
def test_score_answer_agrees_with_each_metric(pred, golds, mode):
    assume(split_gold(golds))
    score = score_answer(pred, golds, mode)
    assert (score.f1, score.em) == (f1_paper(pred, golds), em_paper(pred, golds))
    assert (score.squad_f1, score.squad_em) == (f1_squad(pred, golds), em_squad(pred, golds))
    assert score.reward == {"paper": score.f1, "f1": score.f1, "em": score.em, "squad_f1": score.squad_f1}[mode]


@settings(max_examples=300, deadline=None)
@given(_WORDS)
def test_a_prediction_equal_to_the_gold_scores_one(text):
    assume(ANSWER_SPLIT not in text)
    if normalize_paper(text):
        assert f1_paper(text, [text]) == 1.0 and em_paper(text, [text]) == 1.0
        assert f1_paper(text + " ", [f"  {text}"]) == 1.0
    if normalize_squad(text):
        assert f1_squad(text, [text]) == 1.0 and em_squad(text, [text]) == 1.0


@settings(max_examples=300, deadline=None)
@given(_WORDS, _WORDS)
def test_f1_is_symmetric(a, b):
    assume(a.strip() and b.strip() and ANSWER_SPLIT not in a + b)
    assert f1_paper(a, [b]) == f1_paper(b, [a])
    assert f1_squad(a, [b]) == f1_squad(b, [a])
    assert em_paper(a, [b]) == em_paper(b, [a])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=4), st.text(max_size=20))
def test_score_episode_never_raises_on_any_turns(turns, gold):
    assume(split_gold(gold))
    score = score_episode(turns, gold)
    assert score.reward == -1.0 or (score.format_ok and 0.0 <= score.reward <= 1.0)
    assert score.format_ok == check_format(turns)[0]
    assert score.to_dict() == dataclasses.asdict(score)
    json.dumps(score.to_dict())


_TURN = st.lists(
    st.one_of(
        st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<tool_call>", "</tool_call>"]),
        st.sampled_from(['{"name": "web_search", "arguments": {"query": ["q"]}}', "Paris", " \x00 "]),
        st.text(max_size=5),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TURN, min_size=1, max_size=4))
def test_reward_agrees_with_the_parser_on_the_answer(turns):
    # The env ends an episode at the first turn parse_turn reads as an answer; the reward must score that one.
    ok, _ = check_format(turns)
    if ok:
        parsed = [parse_turn(t, max_chars=10**6) for t in turns]
        assert extract_answer(turns) == next(p.answer for p in parsed if p.kind == "answer")
