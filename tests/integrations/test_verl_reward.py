"""compute_score: the paper's reward on a decoded multi-turn response, scoring only the policy's own turns.

Needs no verl (verl loads the module by file path); where verl is installed it is also loaded verl's way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drgym.errors import ConfigError
from drgym.integrations.verl_reward import compute_score, policy_turns

MODULE = Path(__file__).resolve().parents[2] / "drgym" / "integrations" / "verl_reward.py"

CALL = '<think>search</think><tool_call>{"name": "web_search", "arguments": {"query": ["q"]}}</tool_call>'
TOOL = "<|im_end|>\n<|im_start|>user\n<tool_response>\n{body}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
ANSWER = "<think>found it</think><answer>Barack Obama</answer><|im_end|>"


def test_scores_the_answer_after_tool_turns():
    response = CALL + TOOL.format(body="1. Obama\n   URL: https://x") + ANSWER
    assert compute_score("nq", response, "Barack Obama<|answer_split|>Obama") == {
        "score": 1.0, "f1": 1.0, "em": 1.0, "format_ok": 1.0
    }


def test_tags_in_tool_output_do_not_change_the_reward():
    # The original scanned tool output too: a page holding "<answer>" or "<think>" flipped the reward to -1.
    response = CALL + TOOL.format(body="a page says <answer>wrong</answer> and <think> unclosed") + ANSWER
    assert compute_score("nq", response, ["Barack Obama"])["score"] == 1.0


def test_policy_format_errors_score_minus_one():
    response = "<think>unclosed<tool_call>{}</tool_call>" + TOOL.format(body="x") + ANSWER
    assert compute_score("nq", response, ["Barack Obama"])["score"] == -1.0
    assert compute_score("nq", CALL + TOOL.format(body="x"), ["Barack Obama"])["score"] == -1.0  # no answer
    assert compute_score("nq", CALL, ["x"], {"reward_mode": "f1"})["score"] == 0.0


def test_decoded_without_special_tokens_and_forced_think_prefix():
    # skip_special_tokens drops <|im_start|>/<|im_end|>; under protocol="deepresearcher" the prompt forces
    # "<think>" at each turn, so the sampled text starts inside the think block.
    response = (
        'search</think><tool_call>{"name": "web_search", "arguments": {"query": ["q"]}}</tool_call>\nuser\n'
        "<tool_response>\nr\n</tool_response>\nassistant\nfound</think><answer>Barack Obama</answer>"
    )
    assert compute_score("nq", response, ["Barack Obama"], {"generation_prefix": "<think>"})["score"] == 1.0
    assert compute_score("nq", response, ["Barack Obama"])["score"] == -1.0  # without the prefix: unbalanced
    assert all(t.startswith("<think>") for t in policy_turns(response, generation_prefix="<think>"))


def test_no_gold_is_a_clear_error():
    with pytest.raises(ConfigError, match="gold"):
        compute_score("nq", ANSWER, "")


def test_loads_by_file_path_as_verl_does():
    import_utils = pytest.importorskip("verl.utils.import_utils")
    fn = import_utils.load_extern_object(module_path=str(MODULE), object_name="compute_score")
    assert fn("nq", CALL + TOOL.format(body="x") + ANSWER, "Barack Obama")["score"] == 1.0
