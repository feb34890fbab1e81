"""``drgym.integrations.trl`` on the real ``trl.GRPOTrainer`` (CPU, a tiny Qwen2 built from a config)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from drgym.data.synthetic import make_synthetic_task  # noqa: E402
from drgym.errors import ConfigError, DependencyNotInstalled  # noqa: E402
from drgym.integrations import trl as dtrl  # noqa: E402
from drgym.integrations._trl_version import SUPPORTED_TRL, check_trl_version  # noqa: E402
from drgym.search.base import SearchBackend  # noqa: E402
from drgym.search.local import BM25Backend  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

SYSTEM = "Search, then answer."
_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_RESULT = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)


@pytest.fixture(scope="module")
def task():
    records, passages = make_synthetic_task(6, seed=0)
    search = BM25Backend(passages, corpus="synthetic", cache=False)
    texts = [t for p in passages for t in (p.title, p.text)] + [t for r in records for t in (r.question, *r.answers)]
    env_kwargs = {"dataset": records, "search": search, "max_turns": 3, "results_per_query": 2, "today": "2025-01-01"}
    return env_kwargs, texts


def tiny_model(texts, cls=None):
    """A tiny Qwen2 and its word tokenizer, given Qwen2.5's own chat template (which TRL knows how to parse)."""
    from trl.chat_template_utils import qwen2_5_chat_template

    from drgym.llm.tiny import tiny_causal_lm

    model, tokenizer = tiny_causal_lm("word", seed=0, texts=texts)
    tokenizer.chat_template = qwen2_5_chat_template
    if cls is not None:
        model.__class__ = cls
    return model, tokenizer


def config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=96,
        max_steps=1,
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=0,
        gradient_checkpointing=False,
    )
    values.update(overrides)
    return dtrl.grpo_config(**values)


# ------------------------------------------------------------------------------------------ bad input


def test_trl_outside_the_supported_range_is_refused_naming_the_range():
    check_trl_version("1.16.0")
    for version in ("1.15.9", "1.17.0", "2.0.0", "not-a-version"):
        with pytest.raises(DependencyNotInstalled, match=re.escape(f"supports trl{SUPPORTED_TRL}, but trl {version}")):
            check_trl_version(version)


def test_unknown_grpo_config_field_names_the_nearest(tmp_path):
    with pytest.raises(ConfigError, match="unknown GRPOConfig field `num_generation`.*did you mean `num_generations`"):
        dtrl.grpo_config(output_dir=str(tmp_path), num_generation=4)


def test_unknown_env_option_names_the_nearest(task):
    env_kwargs, _ = task
    with pytest.raises(ConfigError, match="unknown WebResearch-v0 option `max_turn`; did you mean `max_turns`"):
        dtrl.WebResearchToolEnv(**{**env_kwargs, "max_turn": 3})


@pytest.mark.parametrize("build", [dtrl.WebResearchToolEnv, dtrl.make_rollout_func, dtrl.make_dataset])
def test_a_record_without_answers_fails_at_construction_naming_it(task, build):
    env_kwargs, _ = task
    dataset = [{"question": "Who is there?", "answers": ["me"]}, {"question": "Where is Nowhere?", "answers": []}]
    with pytest.raises(ConfigError, match=re.escape("dataset record 1 (id '1', question 'Where is Nowhere?') has no")):
        build(**{**env_kwargs, "dataset": dataset})


def test_a_row_without_usable_answers_is_named(task):
    env = dtrl.WebResearchToolEnv(**task[0])
    prompt = [{"role": "user", "content": "Who founded Atlantis?"}]
    with pytest.raises(ConfigError, match="dataset row 'row-7' has no gold answers"):
        env.reset(prompt=prompt, id="row-7")
    with pytest.raises(ConfigError, match="dataset row 'row-8' has no usable gold answers"):
        env.reset(prompt=prompt, id="row-8", answers=["", " "])


def test_reset_poses_the_row_question_or_a_seeded_draw(task):
    env = dtrl.WebResearchToolEnv(**task[0])
    record = env.env.records[2]
    assert env.reset(prompt=[{"role": "user", "content": record.question}]) is None  # already in the prompt
    assert env.env._episode.record.answers == record.answers  # answers looked up in the env's dataset
    assert env.reset(prompt=[{"role": "user", "content": ""}]) in {r.question for r in env.env.records}
    assert env.reset(question="What is X?", answers="x<|answer_split|>y") == "What is X?"
    assert env.env._episode.record.answers == ["x", "y"]


def test_tool_after_the_episode_ended_is_a_clear_error_string(task):
    env = dtrl.WebResearchToolEnv(**{**task[0], "max_turns": 2})

    async def play():
        env.reset(index=0)
        first = await env.web_search(query=[env.env.records[0].question])
        second = await env.web_search(query=["anything"])  # turn 2 of 2: the env truncates the episode
        third = await env.browse_webpage(url_list=["https://local.drgym/x"])
        return first, second, third

    first, second, third = asyncio.run(play())
    assert "URL:" in first and "the episode has ended" not in first
    assert second.endswith("[the turn limit was reached: the episode has ended]")
    assert third.startswith("Error: the episode has ended (the turn limit was reached)")
    assert env.get_reward() == -1.0  # the env's no-answer score


class _BrokenSearch(SearchBackend):
    """A search backend whose connection always resets (an infrastructure fault)."""

    name = "broken"

    async def search(self, query, num_results=10):
        raise ConnectionResetError("connection reset by peer")


def test_env_fault_inside_a_tool_is_an_error_string_to_the_model(task):
    env = dtrl.WebResearchToolEnv(**{**task[0], "search": _BrokenSearch()})
    env.reset(index=0)
    text = asyncio.run(env.web_search(query=["x"]))
    assert "failed" in text and "ConnectionResetError" in text
    assert env.env._episode.backend_errors == 1


def test_get_reward_without_finish_episodes_says_what_to_pass(task):
    env = dtrl.WebResearchToolEnv(**task[0])
    env.reset(index=0)
    with pytest.raises(ConfigError, match=r"pass reward_funcs=\[drgym.integrations.trl.finish_episodes\]"):
        env.get_reward()
    with pytest.raises(ConfigError, match="finish_episodes needs GRPOTrainer"):
        dtrl.finish_episodes(completions=[[]])


def test_rollout_prompt_outside_the_dataset_is_named(task):
    rollout = dtrl.make_rollout_func(**task[0])
    question = rollout.records[0].question
    with pytest.raises(ConfigError, match=re.escape(f"the closest is {question!r}")):
        rollout._pose([{"role": "user", "content": question + "?"}])


def test_tool_methods_are_what_trl_turns_into_the_schemas():
    from transformers.utils import get_json_schema

    schema = get_json_schema(dtrl.WebResearchToolEnv.web_search)["function"]
    assert schema["name"] == "web_search"
    assert schema["parameters"]["properties"]["query"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Search queries; up to 3 queries are used.",
    }
    browse = get_json_schema(dtrl.WebResearchToolEnv.browse_webpage)["function"]
    assert browse["parameters"]["required"] == ["url_list"]
