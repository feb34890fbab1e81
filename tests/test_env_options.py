"""Every option is checked at ``make``, and records without a question or gold answers are refused at load."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import drgym  # noqa: F401  (registers the env ids)
from drgym.data.loaders import parse_dataset
from drgym.data.records import QARecord
from drgym.env import WebResearchEnv
from drgym.errors import ConfigError, DataError

ANSWER = "<think>done</think><answer>Ilse Varrow</answer>"


def _make(**options: Any) -> gym.Env:
    return gym.make("drgym/WebResearch-v0", **{"dataset": "demo", **options})


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"search": "miniweb", "corpus": "nope"},
            "`corpus` must be a corpus name (demo, wiki-local), got 'nope'",
        ),
        ({"corpus": "wiki-locl"}, "got 'wiki-locl'. Did you mean `wiki-local`?"),
        (
            {"search": "miniweb", "search_kwargs": {"corpus": "dmo"}},
            "`search_kwargs['corpus']` must be a corpus name (demo, wiki-local), got 'dmo'. Did you mean `demo`?",
        ),
        (
            {"search": "local", "search_kwargs": {"name": "x"}},
            "`search_kwargs['name']` must be a corpus name",
        ),
        ({"today": "not a date"}, "`today` must be a datetime.date or an ISO date string"),
        ({"today": 12345}, "`today` must be a datetime.date or an ISO date string like '2025-04-03'"),
        ({"today": "2025-13-01"}, "got '2025-13-01'"),
        ({"browse_time_budget_s": "60"}, "`browse_time_budget_s` must be a finite number of seconds > 0"),
        ({"browse_time_budget_s": float("nan")}, "`browse_time_budget_s` must be a finite number"),
        ({"browse_time_budget_s": float("inf")}, "got inf"),
        ({"browse_time_budget_s": 0}, "got 0"),
        ({"browse_time_budget_s": True}, "got True"),
        ({"search": 42}, "`search` must be a backend name, a non-empty list of names"),
        ({"search": []}, "`search` must be a backend name"),
        ({"search": ["serper", 3]}, "`search` must be a backend name"),
        (
            {"search": "serpr"},
            (
                "unknown backend `serpr`; valid backends: brave, local, miniweb, searxng, serper, "
                "tavily. Did you mean `serper`?"
            ),
        ),
        ({"search": ["serper", "nope"]}, "`search` names an unknown backend `nope`"),
        ({"search": ["serper", "replay"]}, "unknown backend `replay`"),
        ({"search": ["serper", "serper"]}, "names a backend twice"),
        (
            {"search": ["serper", "brave"], "search_kwargs": {"api_key": "k"}},
            "`search_kwargs` of the chain ['serper', 'brave'] is keyed by member name; `api_key` is none",
        ),
        (
            {"search": ["serper", "brave"], "search_kwargs": {"brave": "k"}},
            "`search_kwargs['brave']` must be a dict",
        ),
        ({"search_kwargs": "x"}, "`search_kwargs` must be a dict of backend arguments or None, got 'x'"),
        ({"search_kwargs": {1: 2}}, "`search_kwargs` keys must be argument names"),
        (
            {"reward_mode": "papr"},
            "`reward_mode` must be one of 'paper', 'f1', 'em', 'squad_f1', got 'papr'. Did you mean `paper`?",
        ),
        ({"on_format_error": "stop"}, "`on_format_error` must be one of"),
        ({"render_mode": "rgb_array"}, "`render_mode` must be one of 'ansi', 'human'"),
        ({"limit": 0}, "`limit` must be a positive integer or None, got 0"),
        ({"limit": "3"}, "`limit` must be a positive integer or None, got '3'"),
        ({"search_budget_per_episode": 0}, "`search_budget_per_episode` must be a positive integer or None"),
        ({"search_budget_global": 2.5}, "`search_budget_global` must be a positive integer or None"),
        ({"cache_path": 5}, "`cache_path` must be a file path (str or os.PathLike) or None, got 5"),
        ({"replay_path": ""}, "`replay_path` must name a file, got an empty string"),
        ({"cache_mode": 1}, "`cache_mode` must be a mode name or None, got 1"),
        ({"cache_mode": "nope", "cache_path": "x.sqlite"}, "`cache_mode` must be one of 'off', 'read-write'"),
        ({"max_turns": True}, "`max_turns` must be a positive integer, got True"),
        ({"max_observation_chars": 0}, "`max_observation_chars` must be a positive integer, got 0"),
        ({"browse_only_seen_urls": "yes"}, "`browse_only_seen_urls` must be True or False, got 'yes'"),
        ({"dataset": 5}, "`dataset` must be a dataset name or a list of QARecord"),
        ({"dataset": {"question": "Q?", "answers": ["a"]}}, "`dataset` must be a dataset name or a list"),
        ({"dataset": " "}, "`dataset` must name a dataset"),
        ({"dataset": "bamboogl"}, "Did you mean 'bamboogle'?"),
        ({"data_source": 5}, "`data_source` must be a source name, a list of names or None, got 5"),
    ],
)
def test_bad_options_fail_at_make_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _make(**options)


def test_an_unknown_chain_member_is_named_before_a_known_one_needs_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="unknown backend `nope`") as caught:
        _make(search=["serper", "nope"])
    assert "key" not in str(caught.value).lower()


def test_good_spellings_are_accepted(tmp_path: Path) -> None:
    env = _make(today="2025-04-03", browse_time_budget_s=5, cache_path=tmp_path / "c.sqlite", corpus="demo")
    assert env.unwrapped.today == dt.date(2025, 4, 3)
    assert "Thursday, April 3, 2025" in env.unwrapped._system_prompt
    assert _make(today=dt.datetime(2025, 4, 3, 12)).unwrapped.today == dt.date(2025, 4, 3)
    assert _make(browse_time_budget_s=0.5, limit=2, data_source=["demo"]).unwrapped.records


# ----------------------------------------------------------------------------- records


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ({"question": "Who founded Tollmere?", "answers": []}, "answers [])"),
        ({"question": "Who founded Tollmere?", "answers": [None]}, "answers [None])"),
        ({"question": "Who founded Tollmere?", "answers": ""}, "answers '')"),
        ({"question": "Who founded Tollmere?", "answers": ["", "  "]}, "answers ['', '  '])"),
        ({"question": "Who founded Tollmere?", "answer": None}, "(question 'Who founded Tollmere?')"),
        ({"question": "Who founded Tollmere?"}, "(question 'Who founded Tollmere?')"),
        (QARecord("Who founded Tollmere?", [], "custom", "x"), "answers [])"),
    ],
)
def test_records_without_gold_answers_are_refused_at_load_naming_them(bad: Any, shown: str) -> None:
    dataset = [{"question": "A good one?", "answers": ["yes"]}, bad]
    with pytest.raises(ConfigError, match=re.escape("dataset record 1 (question 'Who founded Tollmere?'")):
        _make(dataset=dataset)
    with pytest.raises(ConfigError, match="it has no usable gold answer") as caught:
        WebResearchEnv(dataset=dataset)
    assert shown in str(caught.value)


@pytest.mark.parametrize("question", ["", "   \n", None, 7])
def test_records_with_empty_questions_are_refused(question: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"dataset record 0 \(question .*its question is empty or not a string"
    ):
        _make(dataset=[{"question": question, "answers": ["a"]}])


def test_a_record_with_mapping_answers_is_named() -> None:
    with pytest.raises(ConfigError, match=r"dataset record 0 \(question 'Q\?'.*gold answers must be strings"):
        _make(dataset=[{"question": "Q?", "answers": [{"text": "a"}]}])


def test_usable_records_keep_working() -> None:
    dataset = [
        {"question": " Q? ", "answer": "1912"},
        {"question": "R?", "answers": [1912, "x<|answer_split|>y"]},
        QARecord("S?", ["a", ""], "custom", "s"),
    ]
    env = _make(dataset=iter(dataset), corpus="demo")  # any iterable of records
    records = env.unwrapped.records
    assert [(r.question, r.answers) for r in records] == [
        ("Q?", ["1912"]),
        ("R?", ["1912", "x", "y"]),
        ("S?", ["a"]),
    ]


def test_an_unknown_data_source_of_a_given_dataset_is_named() -> None:
    dataset = [{"question": "Q?", "answers": ["a"], "source": "hotpotqa"}]
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "unknown data_source of the given dataset 'hotpotq'; valid: hotpotqa. Did you mean 'hotpotqa'?"
        ),
    ):
        _make(dataset=dataset, data_source="hotpotq", corpus="demo")


def test_a_registered_dataset_row_without_answers_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "nq.json"
    path.write_text(
        json.dumps([{"question": "ok?", "answer": "a"}, {"question": "Who wrote it?", "answer": ""}])
    )
    with pytest.raises(DataError, match=re.escape("record 1 (question 'Who wrote it?', answers '')")):
        parse_dataset("nq-open", [path])


# ----------------------------------------------------------------------------- reset with a question alone


def test_reset_with_a_question_and_no_answers_plays_unscored() -> None:
    env = _make()
    obs, _ = env.reset(options={"question": "Who founded Tollmere?"})
    assert obs == "Who founded Tollmere?"
    _, reward, terminated, _, info = env.step(ANSWER)
    assert terminated and reward == 0.0 and info["scored"] is False
    assert info["answer"] == "Ilse Varrow" and info["answers"] == [] and info["f1"] == 0.0

    env.reset(options={"question": "Who founded Tollmere?", "answers": []})
    _, reward, terminated, _, info = env.step("no tags at all")  # a broken format is not scored either
    assert terminated and reward == 0.0 and info["scored"] is False and info["format_ok"] is False

    env.reset(options={"question": "Who founded Tollmere?", "answers": ["Ilse Varrow"]})
    _, reward, _, _, info = env.step(ANSWER)
    assert reward == 1.0 and info["scored"] is True
