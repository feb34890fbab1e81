"""Evaluation metrics against hand-computed cases, the paper's normalisation quirks included."""

from __future__ import annotations

import pytest

from drgym.benchmarks.metrics import (
    bootstrap_macro_mean,
    bootstrap_mean,
    episode_costs,
    score_answer,
    score_trajectory,
)
from drgym.errors import ConfigError
from drgym.runner import Trajectory, TurnRecord


def _traj(
    answer: str | None,
    answers: list[str],
    *,
    reward: float | None = None,
    error: str | None = None,
    terminated: bool = True,
    truncated: bool = False,
    turns: list[TurnRecord] | None = None,
) -> Trajectory:
    scored = score_answer(answer, answers)["f1"] if reward is None else reward
    return Trajectory(
        agent="a",
        record_id="r",
        source="nq",
        question="q?",
        answers=answers,
        answer=answer,
        reward=scored,
        f1=max(scored, 0.0),
        terminated=terminated,
        truncated=truncated,
        error=error,
        turns=turns or [],
    )


def test_paper_keeps_articles_squad_drops_them() -> None:
    scores = score_answer("the Beatles", ["Beatles"])
    # paper: tokens {the, beatles} vs {beatles}: P = 1/2, R = 1, F1 = 2/3; SQuAD: both "beatles".
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["em"] == 0.0
    assert (scores["squad_f1"], scores["squad_em"]) == (1.0, 1.0)


def test_paper_turns_punctuation_into_spaces_squad_deletes_it() -> None:
    scores = score_answer("U.S.", ["u s"])
    # paper: "U.S." → "u s " → "u s" == "u s"; SQuAD: "us" vs "u s" share no token.
    assert (scores["f1"], scores["em"]) == (1.0, 1.0)
    assert (scores["squad_f1"], scores["squad_em"]) == (0.0, 0.0)


def test_paper_f1_is_over_token_sets_squad_over_multisets() -> None:
    scores = score_answer("paris paris france", ["Paris"])
    # paper: {paris, france} vs {paris}: P = 1/2, R = 1 → 2/3.
    # SQuAD: 1 common token of 3 predicted: P = 1/3, R = 1 → 1/2.
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["squad_f1"] == pytest.approx(1 / 2)


def test_maximum_over_golds_and_no_answer() -> None:
    assert score_answer("1802", ["1801", "born 1802"])["f1"] == pytest.approx(2 / 3)
    assert score_answer(None, ["x"]) == {"f1": 0.0, "em": 0.0, "squad_f1": 0.0, "squad_em": 0.0}
    assert score_answer("x", []) == {"f1": 0.0, "em": 0.0, "squad_f1": 0.0, "squad_em": 0.0}


def test_a_good_episode_scores_its_answer() -> None:
    score = score_trajectory(_traj("Ilse Varrow", ["Ilse Varrow"]))
    assert (score.f1, score.em, score.squad_f1, score.squad_em) == (1.0, 1.0, 1.0, 1.0)
    assert score.format_ok and not score.failed and score.exact


def test_a_format_failure_scores_zero_in_evaluation() -> None:
    # The env's paper reward is -1 on a broken format, even when the (broken) turn held the right answer.
    score = score_trajectory(_traj("Ilse Varrow", ["Ilse Varrow"], reward=-1.0))
    assert (score.f1, score.em, score.squad_f1, score.squad_em) == (0.0, 0.0, 0.0, 0.0)
    assert not score.format_ok and not score.failed and not score.exact


def test_turn_limit_without_answer_and_crashes_score_zero() -> None:
    truncated = score_trajectory(_traj(None, ["x"], reward=-1.0, terminated=False, truncated=True))
    assert not truncated.format_ok and truncated.f1 == 0.0
    crashed = score_trajectory(_traj("x", ["x"], reward=0.0, error="RuntimeError: boom", terminated=False))
    assert crashed.failed and not crashed.format_ok and crashed.em == 0.0


def test_costs_sum_tokens_and_leave_unknown_ones_empty() -> None:
    def turn(i: int, prompt: int | None, completion: int | None) -> TurnRecord:
        return TurnRecord(i, "a", "o", 0.0, None, None, True, None, 0.0, 0.0, prompt, completion)

    traj = _traj("x", ["x"], turns=[turn(0, 100, 20), turn(1, 150, None)])
    traj.tool_calls, traj.search_calls, traj.pages_read, traj.wall_time_s = 1, 3, 2, 1.5
    assert episode_costs(traj) == {
        "tool_calls": 1.0,
        "search_calls": 3.0,
        "pages_read": 2.0,
        "prompt_tokens": 250.0,
        "completion_tokens": 20.0,
        "wall_time_s": 1.5,
    }
    assert episode_costs(_traj("x", ["x"]))["prompt_tokens"] is None


def test_bootstrap_of_two_values_spans_both() -> None:
    # Resample means of [0, 1] are 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    interval = bootstrap_mean([0.0, 1.0], n_resamples=2000, seed=3)
    assert (interval.mean, interval.lo, interval.hi, interval.n) == (0.5, 0.0, 1.0, 2)


def test_bootstrap_is_seeded_and_narrows_with_more_data() -> None:
    values = [0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75, 1.0]
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)
    small = bootstrap_mean(values, seed=0)
    large = bootstrap_mean(values * 25, seed=0)
    assert small.lo <= small.mean <= small.hi
    assert large.mean == pytest.approx(small.mean)
    assert large.hi - large.lo < small.hi - small.lo
    constant = bootstrap_mean([0.4] * 5)
    assert (constant.lo, constant.hi) == pytest.approx((0.4, 0.4))
    assert bootstrap_mean([]) is None


def test_macro_mean_weighs_each_source_equally() -> None:
    interval = bootstrap_macro_mean({"nq": [1.0, 1.0], "popqa": [0.0, 0.0, 0.0, 0.0], "empty": []})
    assert interval.mean == 0.5  # not 2/6: a large source does not outweigh a small one
    assert (interval.lo, interval.hi, interval.n) == (0.5, 0.5, 6)
    assert bootstrap_macro_mean({"nq": []}) is None


def test_bootstrap_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="confidence must be strictly between 0 and 1"):
        bootstrap_mean([1.0], confidence=95)
    with pytest.raises(ConfigError, match="n_resamples must be a positive integer, got 0"):
        bootstrap_mean([1.0], n_resamples=0)
    with pytest.raises(ConfigError, match="finite numbers"):
        bootstrap_mean([1.0, float("nan")])
