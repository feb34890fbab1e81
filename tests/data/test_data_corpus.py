"""The wiki-local corpus built from the real files, and the shipped demo world."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from drgym import data
from drgym.data.corpus import build_wiki_local, dedup_passages, normalise_text, passage_id
from drgym.data.registry import SPECS


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]", " ", text.lower()).split())


@pytest.mark.usefixtures("data_mirror")
class TestWikiLocal:
    def test_size_dedup_and_attribution(self):
        passages = data.load_corpus("wiki-local")
        assert len(passages) == 35843
        assert len({p.id for p in passages}) == len(passages)
        assert len({(p.title, p.text) for p in passages}) == len(passages)
        assert all(p.id == passage_id(p.title, p.text) for p in passages)
        assert all(p.text == normalise_text(p.text) and "  " not in p.title for p in passages)
        sources = Counter(p.source for p in passages)
        assert set(sources) <= set(SPECS["wiki-local"].files)
        assert sources["corpora/wikipedia_vital_articles_summaries_en.json"] == 10032
        assert sources["corpora/flashrag_wiki18_sample_1000.jsonl"] == 1000
        assert all(p.title and p.text and p.text == p.text.strip() for p in passages)
        assert not any(p.title.startswith('"') and p.title.endswith('"') for p in passages)

    def test_sentence_lists_are_joined(self):
        passages = {p.title: p for p in data.load_corpus("wiki-local")}
        demon = passages["Demon Dice"].text
        assert demon.startswith("Demon Dice, originally published as Chaos Progenitus,")
        assert "Tim Brown. In it, each player" in demon

    def test_ids_survive_reordering(self, data_mirror: Path):
        files = [(r, data_mirror / r) for r in SPECS["wiki-local"].files]
        forward = build_wiki_local(files)
        backward = build_wiki_local(reversed(files))
        assert {p.id for p in forward} == {p.id for p in backward}
        assert {p.id: (p.title, p.text) for p in forward} == {p.id: (p.title, p.text) for p in backward}

    @pytest.mark.parametrize(
        "name", ["hotpotqa-dev500", "musique-dev100", "popqa-1000", "hotpotqa-train100", "musique-train100"]
    )
    def test_supporting_paragraphs_are_in_the_corpus(self, name: str):
        titles = {p.title for p in data.load_corpus("wiki-local")}
        for record in data.load_dataset(name):
            assert set(record.metadata["supporting_titles"]) <= titles, record.id

    def test_returned_list_is_a_copy(self):
        first = data.load_corpus("wiki-local")
        first.clear()
        assert len(data.load_corpus("wiki-local")) == 35843

    async def test_async_loader(self):
        assert len(await data.aload_corpus("wiki-local")) == 35843


def test_dedup_keeps_the_first_and_ignores_whitespace():
    triples = [("T", "a  b\n\n c", "one"), (" T ", "a b\nc\n", "two"), ("T", "a b c", "two"), ("", "x", "z")]
    passages = dedup_passages(triples)
    assert [(p.title, p.text, p.source) for p in passages] == [("T", "a b\nc", "one"), ("T", "a b c", "two")]
    assert passage_id("T", "a  b") == passage_id(" T", "a b ") and len(passages[0].id) == 12


class TestDemo:
    def test_loads_with_no_mirror_and_no_network(self, monkeypatch, drgym_home: Path):
        monkeypatch.delenv("DRGYM_DATA_MIRROR", raising=False)
        records, passages = data.load_dataset("demo"), data.load_corpus("demo")
        assert len(records) == 22 and len(passages) == 46
        assert not (drgym_home / "data").exists()
        assert all(p.source == "demo" for p in passages)
        assert len({p.id for p in passages}) == 46

    def test_every_answer_is_in_its_supporting_passages(self):
        by_title: dict[str, list[str]] = {}
        for p in data.load_corpus("demo"):
            by_title.setdefault(p.title, []).append(_norm(p.text))
        for record in data.load_dataset("demo"):
            supporting = record.metadata["supporting_titles"]
            assert supporting and set(supporting) <= set(by_title), record.id
            texts = [t for title in supporting for t in by_title[title]]
            if record.answers == ["yes"]:
                continue  # a comparison: both dates are checked below
            assert any(_norm(a) in t for a in record.answers for t in texts), record.id

    def test_comparison_question_is_true(self):
        texts = [p.text for p in data.load_corpus("demo")]
        varrow = int(re.search(r"Ilse Varrow \((\d{4})", " ".join(texts)).group(1))
        quill = int(re.search(r"Marten Quill \((\d{4})", " ".join(texts)).group(1))
        assert varrow < quill

    def test_needs_multi_hop(self):
        hops = Counter(r.metadata["hops"] for r in data.load_dataset("demo"))
        assert set(hops) == {1, 2} and hops[2] >= 10

    def test_answers_are_not_in_the_questions(self):
        for record in data.load_dataset("demo"):
            assert not any(_norm(a) in _norm(record.question) for a in record.answers), record.id
