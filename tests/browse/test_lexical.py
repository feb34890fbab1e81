from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drgym.browse import EpisodeMemory, LexicalReader
from drgym.browse.lexical import select_passages
from drgym.document import Document
from drgym.errors import ConfigError

QUESTION = "When was the Eiffel Tower completed?"
SUBQUESTION = "Eiffel Tower construction completion date"
RELEVANT = (
    "The Eiffel Tower was completed on 31 March 1889, after two years of construction, "
    "and opened to the public in May of that year."
)
FILLER_TOPICS = [
    "Barley and oats grow well in the northern valley when spring rainfall is generous.",
    "The harbour authority dredged the channel so that larger cargo ships could dock.",
    "Migratory geese rest on the lake every autumn before flying further south.",
    "A new tram line links the university campus with the central railway station.",
    "Local potters fire their clay in wood kilns that reach very high temperatures.",
    "The chess club meets on Thursdays and runs a tournament for beginners in winter.",
]


def _filler(n: int) -> list[str]:
    return [f"Note {i}. {FILLER_TOPICS[i % len(FILLER_TOPICS)]} " * 3 for i in range(n)]


def _doc(paragraphs: list[str], url: str = "https://example.org/page") -> Document:
    return Document(url=url, title="A long page", content="\n\n".join(paragraphs))


async def test_short_document_comes_back_whole_and_is_remembered():
    doc = Document(url="https://short", title="Short", content="  Eiffel Tower: 330 m tall.\n\nBuilt 1887-1889. ")
    memory = EpisodeMemory()
    notes = await LexicalReader(max_notes_chars=4000).read(
        doc, question=QUESTION, subquestion=SUBQUESTION, memory=memory
    )
    assert notes.notes == "Eiffel Tower: 330 m tall.\n\nBuilt 1887-1889."
    assert (notes.url, notes.title, notes.segments_read, notes.segments_total, notes.error) == (
        "https://short", "Short", 1, 1, None
    )
    assert memory.notes_for("https://short") == notes.notes


async def test_long_document_keeps_relevant_paragraph_and_drops_unrelated():
    paragraphs = _filler(20)
    paragraphs.insert(11, RELEVANT)
    doc = _doc(paragraphs)
    memory = EpisodeMemory()
    notes = await LexicalReader(max_notes_chars=600).read(
        doc, question=QUESTION, subquestion=SUBQUESTION, memory=memory
    )
    assert RELEVANT in notes.notes
    assert len(notes.notes) <= 600
    assert not any(topic in notes.notes for topic in FILLER_TOPICS)
    assert memory.notes_for(doc.url) == notes.notes


async def test_kept_passages_stay_in_document_order():
    second = "The tower's construction employed about 300 workers; completion was celebrated in 1889."
    paragraphs = _filler(30)
    paragraphs.insert(5, RELEVANT)
    paragraphs.insert(25, second)
    notes = await LexicalReader(max_notes_chars=800).read(
        _doc(paragraphs), question=QUESTION, subquestion=SUBQUESTION, memory=EpisodeMemory()
    )
    assert notes.notes.index(RELEVANT) < notes.notes.index(second)
    assert "[…]" in notes.notes  # the gap between the two is marked


async def test_long_paragraph_is_cut_into_sentences():
    sentences = [f"Sentence {i} mentions {FILLER_TOPICS[i % 6]}" for i in range(40)]
    sentences[17] = "Gustave Eiffel's company completed the tower in March 1889."
    doc = _doc([" ".join(sentences)])
    notes = await LexicalReader(max_notes_chars=300).read(
        doc, question=QUESTION, subquestion=SUBQUESTION, memory=EpisodeMemory()
    )
    assert "Gustave Eiffel's company completed the tower in March 1889." in notes.notes
    assert "Sentence 3 " not in notes.notes
    assert len(notes.notes) <= 300


async def test_no_overlap_falls_back_to_the_beginning():
    paragraphs = _filler(20)
    notes = await LexicalReader(max_notes_chars=500).read(
        _doc(paragraphs), question="Who painted Guernica?", subquestion="", memory=EpisodeMemory()
    )
    assert notes.notes.startswith("Note 0.")
    assert 0 < len(notes.notes) <= 500


async def test_max_segments_bounds_the_scan():
    paragraphs = _filler(200) + [RELEVANT]  # the relevant paragraph sits in the last segment
    reader = LexicalReader(max_notes_chars=500, segment_chars=2000, max_segments=3)
    notes = await reader.read(_doc(paragraphs), question=QUESTION, subquestion=SUBQUESTION, memory=EpisodeMemory())
    assert notes.segments_read == 3 and notes.segments_total > 3
    assert RELEVANT not in notes.notes


async def test_big_document_is_read_off_the_loop_and_deterministic():
    paragraphs = _filler(2000)
    paragraphs.insert(1500, RELEVANT)
    doc = _doc(paragraphs)
    reader = LexicalReader(max_notes_chars=1000, max_segments=100)
    first = await reader.read(doc, question=QUESTION, subquestion=SUBQUESTION, memory=EpisodeMemory())
    second = await reader.read(doc, question=QUESTION, subquestion=SUBQUESTION, memory=EpisodeMemory())
    assert len(doc.content) > 200_000
    assert RELEVANT in first.notes
    assert first.notes == second.notes
    assert first.segments_read == first.segments_total > 1


async def test_blank_document_is_reported():
    notes = await LexicalReader().read(
        Document(url="https://blank", title="", content=" \n\n "),
        question=QUESTION, subquestion="", memory=EpisodeMemory(),
    )
    assert notes.error == "the page has no readable text" and notes.notes == ""


@settings(max_examples=200, deadline=None)
@given(
    text=st.lists(st.text(min_size=0, max_size=300) | st.sampled_from(FILLER_TOPICS + [RELEVANT]), max_size=40)
    .map("\n\n".join),
    query=st.text(max_size=80),
    budget=st.integers(min_value=100, max_value=1500),
)
def test_select_passages_respects_the_budget(text, query, budget):
    out = select_passages(text, query, budget)
    assert len(out) <= budget
    assert select_passages(text, query, budget) == out


def test_select_passages_returns_short_text_unchanged():
    assert select_passages("tiny text", "anything", 100) == "tiny text"


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="max_notes_chars must be at least 100, got 5"):
        LexicalReader(max_notes_chars=5)
    with pytest.raises(ConfigError, match="max_segments must be at least 1, got 0"):
        LexicalReader(max_segments=0)
