"""Repair of imperfect model turns into the protocol's exact format (and refusal to invent actions)."""

from __future__ import annotations

import json

import pytest

from drgym import protocol
from drgym.agents.prompt_baseline import final_answer_turn, repair_turn

SEARCH = {"name": "web_search", "arguments": {"query": ["tidal clock inventor"]}}


def _call(turn: str) -> dict:
    parsed = protocol.parse_turn(turn)
    assert parsed.kind == "tool_call", parsed.error
    return {"name": parsed.tool_call.name, "arguments": parsed.tool_call.arguments}


def test_a_valid_turn_is_kept_and_cut_after_its_action() -> None:
    turn = f"<think>x</think><tool_call>{json.dumps(SEARCH)}</tool_call>"
    repaired = repair_turn(turn + "<tool_response>forged</tool_response><answer>x</answer>")
    assert repaired.text == turn
    assert repaired.kind == "tool_call" and repaired.fixes == ()


@pytest.mark.parametrize(
    ("reply", "expected", "fix"),
    [
        (f"<think>x</think><tool_call>{json.dumps(SEARCH)}", SEARCH, "closed an unfinished block"),
        (f"Let me search.\n```json\n{json.dumps(SEARCH)}\n```", SEARCH, "code block"),
        (f"Let me search. {json.dumps(SEARCH)} and then read.", SEARCH, "bare JSON"),
        ('Thought: I need it.\nAction: web_search("tidal clock inventor")\nObservation: ...', SEARCH,
         "function-style"),
        ('Action: web_search(query=["tidal clock inventor"])', SEARCH, "function-style"),
        ("Thought: hm\nAction: Search[tidal clock inventor]", SEARCH, "function-style"),
        ("Thought: hm\nAction: web_search\nAction Input: tidal clock inventor", SEARCH, "Action Input"),
        (("<think>x</think><tool_call>{'name': 'web_search', 'arguments': "
         "{'query': ['tidal clock inventor',]}}</tool_call>"), SEARCH, "repaired the tool call"),
        ('<think>x</think><tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock inventor"',
         SEARCH, "repaired the tool call"),
        (('<think>x</think><tool_call>{"name": "search", "arguments": {"queries": "tidal clock inventor"}}'
         "</tool_call>"), SEARCH, "repaired the tool call"),
        (('<Think>x</Think><Tool_Call>{"name": "web_search", "arguments": {"query": '
          '["tidal clock inventor"]}}</Tool_Call>'), SEARCH, "normalised tag spelling"),
        ('{"function": {"name": "web_search", "arguments": "{\\"query\\": [\\"tidal clock inventor\\"]}"}}',
         SEARCH, "bare JSON"),
        ('Action: browse_webpage(["https://local.drgym/demo/abc", "see https://x.org/p."])',
         {"name": "browse_webpage", "arguments": {"url_list": ["https://local.drgym/demo/abc", "https://x.org/p"]}},
         "function-style"),
    ],
    ids=["unclosed", "fence", "bare-json", "react-call", "react-kwargs", "react-brackets", "react-pair",
         "python-literal", "cut-off-json", "aliases", "tag-case", "openai-shape", "browse"],
)
def test_imperfect_tool_calls_are_repaired(reply: str, expected: dict, fix: str) -> None:
    repaired = repair_turn(reply)
    assert repaired.kind == "tool_call"
    assert _call(repaired.text) == expected
    assert any(fix in f for f in repaired.fixes), repaired.fixes
    assert protocol.tags_balanced(repaired.text)


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("<think>done</think>\n<answer>Ilse Varrow", "Ilse Varrow"),
        ("<think>done\n<answer>Ilse Varrow</answer>", "Ilse Varrow"),
        ("Thought: done\nFinal Answer: Ilse Varrow", "Ilse Varrow"),
        ("**Answer:** 1802", "1802"),
        ("<|im_start|>assistant\n<think>a</think><answer>1802</answer><|im_end|>", "1802"),
    ],
    ids=["unclosed", "think-unclosed", "final-answer-line", "markdown", "template-tokens"],
)
def test_imperfect_answers_are_repaired(reply: str, answer: str) -> None:
    repaired = repair_turn(reply)
    parsed = protocol.parse_turn(repaired.text)
    assert parsed.kind == "answer" and parsed.answer == answer


@pytest.mark.parametrize(
    "reply", ["", "   ", "I will search (the web) for this.", "\x07\u07b3\x10&W", "{}", "[1, 2]"]
)
def test_nothing_usable_is_not_invented(reply: str) -> None:
    repaired = repair_turn(reply)
    assert repaired.text is None and repaired.kind is None and not repaired.ok


def test_a_call_that_cannot_be_repaired_is_passed_on_as_a_tool_error() -> None:
    """Balanced tags around an unusable call: the env will teach the model (format stays ok, no −1)."""
    for reply in ('<think>x</think><tool_call>{"name": "web_search", "arguments": {"query": []}}</tool_call>',
                  "<think>x</think><tool_call>not json at all</tool_call>",
                  "<think>x<tool_call>not json at all"):
        repaired = repair_turn(reply)
        parsed = protocol.parse_turn(repaired.text)
        assert repaired.kind == "tool_error"
        assert parsed.format_ok and parsed.kind == "tool_error", parsed.error


def test_the_first_action_wins() -> None:
    reply = 'Final Answer: too early?\nAction: web_search("x")'
    assert repair_turn(reply).kind == "answer"
    reply = 'Action: web_search("x")\nObservation: ...\nFinal Answer: invented'
    assert _call(repair_turn(reply).text)["arguments"] == {"query": ["x"]}


def test_tags_in_the_reasoning_cannot_break_the_rebuilt_turn() -> None:
    reply = 'Thought: the page had a </think> tag and a <tool_response> in it.\nAction: web_search("q")'
    repaired = repair_turn(reply)
    parsed = protocol.parse_turn(repaired.text)
    assert parsed.kind == "tool_call" and parsed.tool_call.arguments == {"query": ["q"]}
    assert "</think>" not in parsed.think and "<tool_response>" not in parsed.think


def test_huge_replies_are_handled_quickly() -> None:
    reply = "{" * 50_000 + "x" * 50_000
    assert repair_turn(reply).text is None


@pytest.mark.parametrize(
    ("reply", "answer", "fix"),
    [
        ("<think>a</think><answer>Lyon</answer>", "Lyon", None),
        ("<think>It is Lyon.</think>\nLyon", "Lyon", "last line"),
        (f"<think>x</think><tool_call>{json.dumps(SEARCH)}</tool_call>", "unknown", "was a tool call"),
        ("", "unknown", "held no answer"),
    ],
    ids=["answer", "prose", "tool-call", "empty"],
)
def test_final_answer_turn_always_answers(reply: str, answer: str, fix: str | None) -> None:
    repaired = final_answer_turn(reply)
    parsed = protocol.parse_turn(repaired.text)
    assert parsed.kind == "answer" and parsed.answer == answer
    if fix is not None:
        assert any(fix in f for f in repaired.fixes)
