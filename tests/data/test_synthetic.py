"""The synthetic research task: deterministic, answerable through search, and checked arguments."""

from __future__ import annotations

import asyncio
import re

import pytest

from drgym.data.records import Passage, QARecord
from drgym.data.synthetic import SYNTHETIC_SOURCE, make_synthetic_task
from drgym.errors import ConfigError
from drgym.search.local import BM25Backend


def test_same_seed_same_task_and_other_seed_other_task():
    a = make_synthetic_task(20, seed=3, two_hop_fraction=0.3)
    b = make_synthetic_task(20, seed=3, two_hop_fraction=0.3)
    c = make_synthetic_task(20, seed=4, two_hop_fraction=0.3)
    assert a == b
    assert [r.question for r in a.records] != [r.question for r in c.records]
    records, passages = a  # unpacks as a pair
    assert all(isinstance(r, QARecord) for r in records) and all(isinstance(p, Passage) for p in passages)


def test_records_and_passages_are_consistent():
    records, passages = make_synthetic_task(40, seed=0, two_hop_fraction=0.25)
    by_id = {p.id: p for p in passages}
    assert len(records) == 40 and len(by_id) == len(passages)
    assert len({r.id for r in records}) == 40 and len({r.question for r in records}) == 40
    assert sum(r.metadata["hops"] == 2 for r in records) == 10
    for r in records:
        assert r.source == SYNTHETIC_SOURCE and len(r.answers) == 1 and r.answers[0]
        support = [by_id[pid] for pid in r.metadata["support"]]
        assert r.answers[0] in support[-1].text  # the last hop's passage holds the answer
        assert len(r.metadata["queries"]) == r.metadata["hops"]
        if r.metadata["hops"] == 2:
            bridge = re.search(r"born in (\w+)", support[0].text).group(1)
            assert bridge == support[1].title and bridge not in r.question


def test_each_hop_query_finds_its_passage_first():
    records, passages = make_synthetic_task(30, seed=2, two_hop_fraction=0.3)
    backend = BM25Backend(passages, corpus="synthetic", cache=False)

    async def top(query: str) -> str:
        return (await backend.search(query, 1))[0].url

    for r in records:
        for query, pid in zip(r.metadata["queries"], r.metadata["support"]):
            assert asyncio.run(top(query)).endswith(f"/synthetic/{pid}"), (query, pid)


def test_kinds_restrict_the_questions():
    records, _ = make_synthetic_task(12, seed=0, kinds=("founder",))
    assert {r.metadata["kind"] for r in records} == {"founder"}
    assert all(r.question.startswith("Who founded ") for r in records)


def test_entity_pool_asks_several_facts_of_each_entity():
    records, passages = make_synthetic_task(60, seed=1, entities=24)
    assert make_synthetic_task(60, seed=1, entities=24) == (records, passages)
    by_id = {p.id: p for p in passages}
    pairs = [(r.metadata["support"][0], r.metadata["kind"]) for r in records]
    assert len(set(pairs)) == 60  # every question asks a distinct fact
    entities = {pid for pid, _ in pairs}
    assert len(entities) <= 24  # fewer than the 60 questions: names repeat
    for r in records:
        passage = by_id[r.metadata["support"][0]]
        assert r.metadata["hops"] == 1 and passage.title in r.question and r.answers[0] in passage.text
    # a split shares names between its parts: most held-out questions name an entity seen in training
    train_ids = {r.metadata["support"][0] for r in records[:50]}
    assert sum(r.metadata["support"][0] in train_ids for r in records[50:]) >= 5
    # the default generator is unchanged: one entity per question
    default, _ = make_synthetic_task(60, seed=1)
    assert len({r.metadata["support"][0] for r in default}) == 60


def test_neighbours_put_one_candidate_value_in_each_search_result():
    records, passages = make_synthetic_task(30, seed=4, kinds=("population",), neighbours=True)
    assert make_synthetic_task(30, seed=4, kinds=("population",), neighbours=True) == (records, passages)
    backend = BM25Backend(passages, corpus="synthetic", cache=False)
    by_title = {p.title: p for p in passages}
    assert len({r.metadata["support"][0] for r in records}) == 30  # a new town per question
    for r in records:
        town = by_title[re.search(r"population of (\w+)\?", r.question).group(1)]
        before, after = re.match(r"\w+ lies between (\w+) and (\w+)\.", town.text).groups()
        results = asyncio.run(backend.search(r.question, 3))
        titles = [res.title for res in results]
        assert titles[0] == town.title and set(titles[1:]) == {before, after}  # the town, then its neighbours
        values = [re.search(r"is (\d+)\.$", by_title[t].text).group(1) for t in titles]
        assert values[0] == r.answers[0] and len(set(values)) == 3  # three candidates, only the first right
        assert "between" in by_title[before].text and town.title in by_title[before].text


def test_held_out_towns_lie_on_a_ring_of_their_own():
    records, passages = make_synthetic_task(40, seed=2, kinds=("population",), neighbours=True, held_out=8)
    backend = BM25Backend(passages, corpus="synthetic", cache=False)
    held = {r.metadata["support"][0] for r in records[-8:]}
    for r in records[:-8]:  # no training search shows a held-out town's passage
        results = asyncio.run(backend.search(r.question, 3))
        assert not {res.url.rsplit("/", 1)[1] for res in results} & held
    for r in records[-8:]:
        results = asyncio.run(backend.search(r.question, 3))
        assert results[0].url.endswith("/" + r.metadata["support"][0])
        assert {res.url.rsplit("/", 1)[1] for res in results} <= held | {p.id for p in passages if p.id not in {
            q.metadata["support"][0] for q in records}}


def test_name_and_value_pools_make_every_word_recur():
    kw = {"kinds": ("population",), "neighbours": True, "held_out": 8, "name_pool": 8, "value_pool": 10}
    records, passages = make_synthetic_task(40, seed=2, **kw)
    assert make_synthetic_task(40, seed=2, **kw) == (records, passages)
    names = [p.title for p in passages]
    assert len(set(names)) == len(names) and all(len(n.split()) == 2 for n in names)  # every pair used once
    firsts, seconds = {n.split()[0] for n in names}, {n.split()[1] for n in names}
    assert len(firsts) <= 8 and len(seconds) <= 8 and not firsts & seconds
    held = {p.title for p in passages if p.id in {r.metadata["support"][0] for r in records[-8:]}}
    trained = set(names) - held
    for town in held:  # a held-out town is a new pair of words that training towns use
        first, second = town.split()
        assert any(t.startswith(first + " ") for t in trained) and any(t.endswith(" " + second) for t in trained)
    values = {r.answers[0] for r in records}
    assert len(values) <= 10 and len(values) < len(records)  # values recur across towns
    for r in records:  # still answerable: the asked town's passage comes first
        results = asyncio.run(BM25Backend(passages, corpus="synthetic", cache=False).search(r.question, 3))
        assert results[0].url.endswith("/" + r.metadata["support"][0]) and r.answers[0] in results[0].snippet
    default = make_synthetic_task(40, seed=2, kinds=("population",), neighbours=True, held_out=8)
    assert all(len(p.title.split()) == 1 for p in default[1])  # off by default, and the default is unchanged


def test_neighbours_state_only_the_asked_kinds():
    records, passages = make_synthetic_task(12, seed=0, kinds=("founding_year", "river"), neighbours=True)
    assert {r.metadata["kind"] for r in records} <= {"founding_year", "river"}
    assert all("population" not in p.text and " river." in p.text and "founded in" in p.text for p in passages)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_questions": 0}, "num_questions must be an integer >= 1, got 0"),
        (
            {"num_questions": 5, "two_hop_fraction": 1.5},
            "two_hop_fraction must be a number in [0, 1], got 1.5",
        ),
        ({"num_questions": 5, "kinds": ("colour",)}, "unknown question kind(s) ['colour']"),
        ({"num_questions": 5, "kinds": "founder"}, "kinds must be a non-empty list"),
        ({"num_questions": 5, "extra_towns": -1}, "extra_towns must be an integer >= 0, got -1"),
        ({"num_questions": 5, "entities": 0}, "entities must be an integer >= 1 or None, got 0"),
        ({"num_questions": 5, "entities": 4, "two_hop_fraction": 0.5}, "supports one-hop questions only"),
        ({"num_questions": 20, "entities": 2}, "2 entities give 7 distinct questions"),
        ({"num_questions": 5, "neighbours": True, "two_hop_fraction": 0.5}, "set two_hop_fraction 0"),
        ({"num_questions": 40, "neighbours": True, "name_pool": 4}, "raise it to at least 7"),
        ({"num_questions": 5, "neighbours": True, "value_pool": 1}, "value_pool must be an integer >= 2"),
        ({"num_questions": 5, "name_pool": 8}, "apply to neighbours only"),
        ({"num_questions": 5, "neighbours": True, "entities": 4}, "and entities None"),
        ({"num_questions": 5, "neighbours": True, "held_out": 5}, "held_out must be an integer in [0, "),
        ({"num_questions": 5, "held_out": 2}, "held_out (a ring of its own) applies to neighbours only"),
        (
            {"num_questions": 5, "neighbours": True, "kinds": ("trade", "population")},
            "neighbours asks about towns only; kinds ['trade'] are about people",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_synthetic_task(**kwargs)
