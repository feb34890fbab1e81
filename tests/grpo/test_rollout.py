"""The task of a run and the chat format of its episodes (the episodes themselves are played by
``drgym.integrations.trl.make_rollout_func``: tests/integrations/test_trl.py and tests/grpo/test_train.py)."""

from __future__ import annotations

import pytest

from drgym.agents.grpo.rollout import ChatFormat, build_task, train_dataset
from drgym.errors import ConfigError
from tests.grpo.conftest import tiny_config


def test_tool_turn_is_what_the_template_renders(tiny):
    _, tok = tiny
    fmt = ChatFormat(tok)
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
        {"role": "tool", "content": "R"},
    ]
    whole = fmt.render(messages, add_generation_prompt=True)
    assert whole == fmt.render(messages[:2], add_generation_prompt=True) + "A" + fmt.tool_turn_text("R")
    assert fmt.tool_turn_text("R") == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    ids, mask = fmt.episode_ids(messages)
    assert tok.decode(ids) == whole
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "A"


def test_a_template_that_cannot_render_tool_turns_is_refused(tiny):
    _, tok = tiny
    with pytest.raises(ConfigError, match="does not render assistant and tool messages verbatim"):
        ChatFormat(tok, chat_template="{% for m in messages %}{{ m['role'] }}{% endfor %}")


def test_synthetic_entities_make_held_out_questions_name_trained_entities(tmp_path):
    cfg = tiny_config(tmp_path, num_train_questions=40, num_eval_questions=8, synthetic_entities=16)
    task = build_task(cfg)
    entity = [r.metadata["support"][0] for r in task.records]
    assert len(set(entity)) <= 16 and len(task.records) == 48
    trained = {entity[i] for i in task.train_indices}
    assert sum(entity[i] in trained for i in task.eval_indices) >= 6
    assert not set(task.train_indices) & set(task.eval_indices)


def test_train_dataset_rows_are_the_training_questions(tmp_path):
    task = build_task(tiny_config(tmp_path, num_train_questions=5, num_eval_questions=2))
    rows = train_dataset(task)
    assert [r["question"] for r in rows] == [task.records[i].question for i in task.train_indices]
    assert rows[0]["prompt"] == [{"role": "user", "content": rows[0]["question"]}] and rows[0]["answers"]
