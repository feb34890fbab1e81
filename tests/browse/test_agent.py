from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drgym.browse import BrowsingAgent, EpisodeMemory, PageNotes, Reader
from drgym.browse.agent import parse_reply
from drgym.document import Document
from drgym.errors import ConfigError, LLMError
from drgym.web.segment import segment_text

from .doubles import ScriptedClient

QUESTION = "How tall is the Eiffel Tower?"
SUBQUESTION = "Eiffel Tower height in metres"
SEGMENT_CHARS = 300


def _reply(info: str, more: bool) -> str:
    return json.dumps({"new_information": info, "read_more": more})


def _doc(n_segments: int, url: str = "https://example.org/eiffel") -> Document:
    """A page that cuts into exactly ``n_segments`` segments of SEGMENT_CHARS."""
    words = []
    i = 0
    while len(" ".join(words)) < SEGMENT_CHARS * (n_segments - 1) + SEGMENT_CHARS // 2:
        words.append(f"word{i}")
        i += 1
    doc = Document(url=url, title="Eiffel Tower", content=" ".join(words))
    assert len(segment_text(doc.content, SEGMENT_CHARS)) == n_segments
    return doc


async def _read(agent: BrowsingAgent, doc: Document, memory: EpisodeMemory | None = None) -> PageNotes:
    return await agent.read(doc, question=QUESTION, subquestion=SUBQUESTION, memory=memory or EpisodeMemory())


def test_agent_is_a_reader():
    assert isinstance(BrowsingAgent(ScriptedClient([])), Reader)


async def test_read_more_false_stops_early_and_prompts_carry_the_context():
    doc = _doc(4)
    segments = segment_text(doc.content, SEGMENT_CHARS)
    client = ScriptedClient([_reply("The tower is 330 m tall (2022).", True), _reply("Built 1887-1889.", False)])
    memory = EpisodeMemory()
    notes = await _read(BrowsingAgent(client, segment_chars=SEGMENT_CHARS, temperature=0.6), doc, memory)
    assert len(client.calls) == 2
    assert (notes.segments_read, notes.segments_total, notes.error) == (2, 4, None)
    assert notes.notes == "The tower is 330 m tall (2022).\nBuilt 1887-1889."
    assert memory.notes_for(doc.url) == notes.notes
    for index in range(2):
        prompt = client.user_prompt(index)
        assert QUESTION in prompt and SUBQUESTION in prompt and doc.url in prompt
        assert segments[index] in prompt
        assert f"part {index + 1} of 4" in prompt
    assert "(nothing yet)" in client.user_prompt(0)
    assert "The tower is 330 m tall (2022)." in client.user_prompt(1)  # gathered so far
    assert client.calls[0][0][0]["role"] == "system"
    assert client.calls[0][1]["temperature"] == 0.6 and client.calls[0][1]["max_tokens"] > 0


async def test_last_segment_ends_reading_even_when_model_asks_for_more():
    client = ScriptedClient([_reply(f"fact {i}", True) for i in range(10)])
    notes = await _read(BrowsingAgent(client, segment_chars=SEGMENT_CHARS), _doc(2))
    assert len(client.calls) == 2
    assert (notes.segments_read, notes.segments_total, notes.error) == (2, 2, None)
    assert "last part of the page" in client.user_prompt(1)
    assert "last part of the page" not in client.user_prompt(0)


async def test_max_segments_bounds_model_calls():
    client = ScriptedClient([_reply(f"fact {i}", True) for i in range(10)])
    notes = await _read(BrowsingAgent(client, segment_chars=SEGMENT_CHARS, max_segments=3), _doc(6))
    assert len(client.calls) == 3
    assert (notes.segments_read, notes.segments_total) == (3, 6)
    assert notes.notes == "fact 0\nfact 1\nfact 2"


async def test_malformed_replies_are_tolerated():
    client = ScriptedClient([
        '```json\n{"new_information": "330 m", "read_more": true}\n```',
        'Sure, here it is: {"new_information": ["324 m originally", "antenna added"], "read_more": "yes"} ok?',
        '{"new_information": "", "read_more": true}',
        "The page also says 1889, but this is not JSON.",
        _reply("never reached", False),
    ])
    notes = await _read(BrowsingAgent(client, segment_chars=SEGMENT_CHARS), _doc(6))
    assert len(client.calls) == 4  # the plain-text reply is kept and ends the page
    assert notes.notes == "330 m\n324 m originally\nantenna added\nThe page also says 1889, but this is not JSON."
    assert notes.segments_read == 4 and notes.error is None


@pytest.mark.parametrize(
    ("text", "info", "more", "parsed"),
    [
        ('{"new_information": "a", "read_more": false}', "a", False, True),
        ('<think>{"read_more": true}</think>{"new_information": "b", "read_more": true}', "b", True, True),
        ('{"new_information": "cut off by max_tok', "cut off by max_tok", False, True),
        ('{"new_information": "x \\"q\\"", "read_more": true', 'x "q"', True, True),
        ('{"read_more": 1}', "", True, True),
        ('{"new_information": "No new information.", "read_more": false}', "", False, True),
        ('{"new_information": {"height": 330}}', '{"height": 330}', False, True),
        ("{not json} {{{", "{not json} {{{", False, False),
        ("", "", False, False),
        ("<think>never closed", "", False, False),
        ('[1, 2] {"other": 1}', '[1, 2] {"other": 1}', False, False),
    ],
)
def test_parse_reply(text, info, more, parsed):
    reply = parse_reply(text)
    assert (reply.new_information, reply.read_more, reply.parsed) == (info, more, parsed)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.from_regex(r'\{"new_information": ?"[^"]*"?, ?"read_more": ?(true|false|"yes"|1)?\}?'))
def test_parse_reply_never_raises(text):
    reply = parse_reply(text, max_chars=100)
    assert isinstance(reply.new_information, str) and len(reply.new_information) <= 100
    assert isinstance(reply.read_more, bool)


@pytest.mark.parametrize("text", ['{"a": [' * 14000, "{" * 100_000, '[{"x":' * 10_000])
def test_parse_reply_survives_pathological_nesting(text):
    assert parse_reply(text, max_chars=10).parsed is False


def test_parse_reply_caps_runaway_text():
    assert len(parse_reply("z " * 10_000, max_chars=50).new_information) == 50


async def test_llm_error_mid_page_returns_what_was_gathered():
    client = ScriptedClient([_reply("330 m", True), LLMError("HTTP 503 from the model server")])
    memory = EpisodeMemory()
    notes = await _read(BrowsingAgent(client, segment_chars=SEGMENT_CHARS), _doc(3), memory)
    assert notes.notes == "330 m" and notes.segments_read == 1 and notes.segments_total == 3
    assert notes.error == "the reading model failed on part 2 of 3: HTTP 503 from the model server"
    assert memory.notes_for("https://example.org/eiffel") == "330 m"


async def test_time_budget_stops_a_slow_model():
    client = ScriptedClient([_reply("330 m", True), _reply("late", True)], delays=[0.0, 30.0])
    agent = BrowsingAgent(client, segment_chars=SEGMENT_CHARS, time_budget_s=0.5)
    start = time.monotonic()
    notes = await _read(agent, _doc(3))
    assert time.monotonic() - start < 5
    assert notes.notes == "330 m" and notes.segments_read == 1
    assert notes.error == "stopped at part 2 of 3: time budget of 0.5s spent"


async def test_notes_budget_stops_reading():
    client = ScriptedClient([_reply("a" * 80, True), _reply("b" * 80, True), _reply("c", True)])
    agent = BrowsingAgent(client, segment_chars=SEGMENT_CHARS, max_notes_chars=120)
    notes = await _read(agent, _doc(3))
    assert len(client.calls) == 2
    assert len(notes.notes) <= 120 and notes.notes.startswith("a" * 80 + "\n" + "b")


async def test_other_pages_notes_are_shown_as_gathered():
    memory = EpisodeMemory()
    memory.add("https://other.example/page", "Height with antennas: 330 m.")
    client = ScriptedClient([_reply("", False)])
    notes = await _read(BrowsingAgent(client, segment_chars=SEGMENT_CHARS), _doc(1), memory)
    assert "Height with antennas: 330 m." in client.user_prompt(0)
    assert "[https://other.example/page]" in client.user_prompt(0)
    assert notes.notes == "" and notes.error is None and notes.segments_read == 1


async def test_blank_page_makes_no_model_call():
    client = ScriptedClient([])
    notes = await _read(BrowsingAgent(client), Document(url="https://blank", title="", content="\n "))
    assert client.calls == []
    assert notes.error == "the page has no readable text"


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="max_segments must be positive, got 0"):
        BrowsingAgent(ScriptedClient([]), max_segments=0)
    with pytest.raises(ConfigError, match="temperature must be >= 0, got -1"):
        BrowsingAgent(ScriptedClient([]), temperature=-1)
