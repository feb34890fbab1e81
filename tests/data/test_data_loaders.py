"""Every dataset loader against the real files, read through the local mirror."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from drgym import data
from drgym.data.loaders import ANSWER_SPLIT, split_answers
from drgym.data.registry import SPECS
from drgym.errors import ConfigError

pytestmark = pytest.mark.usefixtures("data_mirror")

EXPECTED = {
    "deepresearcher-test": {
        "nq": 512,
        "tq": 512,
        "hotpotqa": 512,
        "2wiki": 512,
        "musique": 512,
        "popqa": 512,
        "bamboogle": 125,
    },
    "deepresearcher-dev": {
        s: 125 for s in ("nq", "tq", "hotpotqa", "2wiki", "musique", "popqa", "bamboogle")
    },
    "bamboogle": {"bamboogle": 125},
    "bamboogle-searchr1": {"bamboogle": 125},
    "nq-open": {"nq": 3610},
    "triviaqa-3000": {"tq": 3000},
    "hotpotqa-dev": {"hotpotqa": 7405},
    "2wiki-dev": {"2wiki": 12576},
    "musique-dev": {"musique": 2417},
    "hotpotqa-dev500": {"hotpotqa": 500},
    "musique-dev100": {"musique": 100},
    "popqa-1000": {"popqa": 1000},
    "hotpotqa-train100": {"hotpotqa": 100},
    "musique-train100": {"musique": 100},
    "demo": {"demo": 22},
}


def test_every_dataset_is_covered():
    assert set(EXPECTED) == set(data.list_datasets())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_sources_and_ids(name: str):
    records = data.load_dataset(name)
    assert dict(Counter(r.source for r in records)) == EXPECTED[name]
    assert int(re.match(r"\d+", SPECS[name].size).group()) == len(records)  # the listed size is the real one
    assert len({r.id for r in records}) == len(records)
    assert all(r.id.startswith(f"{name}:") for r in records)
    for r in records:
        assert r.question and r.question == r.question.strip()
        assert r.answers and all(a and ANSWER_SPLIT not in a for a in r.answers)
        assert len(set(r.answers)) == len(r.answers)
    assert [r.id for r in data.load_dataset(name)] == [r.id for r in records]  # stable order and ids


def test_deepresearcher_rows_keep_the_paper_fields():
    records = data.load_dataset("deepresearcher-test")
    first = records[0]
    assert first.id == "deepresearcher-test:2wiki_db6a0c8c0bdd11eba7f7acde48001122"
    assert (
        first.question
        == "What is the date of birth of Millicent Leveson-Gower, Duchess Of Sutherland's husband?"
    )
    assert first.answers == ["20 July 1851"]
    assert first.metadata == {
        "data_source": "2wiki",
        "index": "2wiki_db6a0c8c0bdd11eba7f7acde48001122",
        "split": "dev",
    }
    popqa = next(r for r in records if r.metadata["index"] == "popqa_3474310")
    assert popqa.answers == ["Bloomsburg", "The Only Town in Pennsylvania", "Eyersburg"]
    bamboogle = [r for r in records if r.source == "bamboogle"]
    assert {r.metadata["data_source"] for r in bamboogle} == {"Bamboogle"}
    assert {r.question for r in bamboogle} == {r.question for r in data.load_dataset("bamboogle")}


@pytest.mark.parametrize(
    ("data_source", "count"),
    [
        ("nq", 125),
        ("Bamboogle", 125),
        ("bamboogle", 125),
        ("triviaqa", 125),
        (["nq", "tq", "popqa"], 375),
        (("hotpotqa", "2wiki", "musique"), 375),
    ],
)
def test_data_source_filter(data_source, count):
    records = data.load_dataset("deepresearcher-dev", data_source=data_source)
    assert len(records) == count
    wanted = {data_source} if isinstance(data_source, str) else set(data_source)
    assert {r.source for r in records} <= {s.lower().replace("triviaqa", "tq") for s in wanted}


def test_unknown_data_source_suggests():
    with pytest.raises(
        ConfigError, match=r"unknown data_source .* 'musiqe'; valid: 2wiki, .*Did you mean 'musique'"
    ):
        data.load_dataset("deepresearcher-dev", data_source="musiqe")
    with pytest.raises(ConfigError, match="data_source must be a string"):
        data.load_dataset("deepresearcher-dev", data_source=[1])


def test_limit_applies_after_the_filter():
    all_nq = data.load_dataset("deepresearcher-test", data_source="nq")
    assert data.load_dataset("deepresearcher-test", data_source="nq", limit=7) == all_nq[:7]
    assert data.load_dataset("deepresearcher-test", limit=0) == []


def test_callers_cannot_corrupt_the_cache():
    records = data.load_dataset("popqa-1000", limit=1)
    records[0].answers.append("poison")
    records[0].metadata["subject"] = "poison"
    again = data.load_dataset("popqa-1000", limit=1)[0]
    assert "poison" not in again.answers and again.metadata["subject"] == "George Rankin"


def test_popqa_answers_come_from_the_json_string():
    first = data.load_dataset("popqa-1000")[0]
    assert first.question == "What is George Rankin's occupation?"
    assert first.answers == ["politician", "political leader", "political figure", "polit.", "pol"]
    assert first.metadata["supporting_titles"] == ("George Rankin", "Politician")


def test_triviaqa_question_is_unwrapped_and_aliases_kept():
    records = data.load_dataset("triviaqa-3000")
    assert records[0].question == "Brunswick, Lancastrian and Pearl Pickler are types of which vegetable?"
    assert records[0].answers[0] == "Onion" and "Allium cepa" in records[0].answers
    assert not any(r.question.startswith("Question:") or r.question.endswith("Answer:") for r in records)


def test_context_sets_name_their_supporting_paragraphs():
    hotpot = data.load_dataset("hotpotqa-dev500")[0]
    assert hotpot.id == "hotpotqa-dev500:5a8c7595554299585d9e36b6" and hotpot.answers == ["Chief of Protocol"]
    assert hotpot.metadata["supporting_titles"] == ("Shirley Temple", "Kiss and Tell (1945 film)")
    musique = data.load_dataset("musique-train100")[0]
    assert musique.answers == ["G. Stanley Hall", "Stanley Hall"] and musique.metadata["hops"] == 2
    train = data.load_dataset("hotpotqa-train100")[0]
    assert (
        train.metadata["supporting_titles"] == ("Alû", "Lilu (mythology)")
        and train.metadata["type"] == "bridge"
    )


def test_nq_open_keeps_every_gold():
    first = data.load_dataset("nq-open")[0]
    assert first.answers == ["14 December 1972 UTC", "December 1972"] and first.source == "nq"


async def test_async_loader():
    records = await data.aload_dataset("deepresearcher-dev", data_source="popqa", limit=3)
    assert len(records) == 3 and all(r.source == "popqa" for r in records)


def test_split_answers_shapes():
    assert split_answers(f"a{ANSWER_SPLIT} b {ANSWER_SPLIT}a") == ["a", "b"]
    assert split_answers({"target": ["x", "y"]}) == ["x", "y"]
    assert split_answers([["x"], "y", 1947]) == ["x", "y", "1947"]
    with pytest.raises(ValueError, match="no answers in"):
        split_answers({"other": 1})
