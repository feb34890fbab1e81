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

from drgym.data.synthetic import make_synthetic_task
from drgym.errors import ConfigError, DependencyNotInstalled
from drgym.integrations import trl as dtrl
from drgym.integrations._trl_version import SUPPORTED_TRL, check_trl_version
from drgym.search.base import SearchBackend
from drgym.search.local import BM25Backend

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
    values = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 256,
        "max_steps": 1,
        "learning_rate": 1e-2,
        "use_cpu": True,
        "bf16": False,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "gradient_checkpointing": False,
    }
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
    with pytest.raises(ConfigError, match=re.escape("dataset record 1 (question 'Where is Nowhere?', answers []): it has "
                                                   "no usable gold answer")):
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


def test_the_rollout_shares_one_services_among_its_envs_and_closes_only_its_own(task):
    from drgym.services import ToolServices

    rollout = dtrl.make_rollout_func(**task[0])
    rollout.envs.append(dtrl._make_env(rollout.env_kwargs))  # as a bigger batch does
    assert all(env.services is rollout.services for env in rollout.envs)
    rollout.close()
    assert rollout.services.closed
    with ToolServices() as shared:
        given = dtrl.make_rollout_func(**task[0], services=shared)
        assert given.services is shared and given.envs[0].services is shared
        given.close()
        assert not shared.closed, "services the caller gave stay open"


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


# ------------------------------------------------------------------------------ the real GRPOTrainer

from transformers import Qwen2ForCausalLM

from drgym.agents.scripted.spans import best_span


class ScriptedQwen2(Qwen2ForCausalLM):
    """A real tiny Qwen2 (its forward is what TRL trains) whose ``generate`` writes scripted turns.

    Turn 1 calls ``web_search`` on the question (Qwen2.5's tool-call form); after the tool result, even rows
    answer with the scripted agent's best span of the results and odd rows break the format, so the rewards of
    a group differ and the update has an advantage to follow.
    """

    script_tokenizer = None

    def generate(self, input_ids, attention_mask=None, **kwargs):
        tok = self.script_tokenizer
        rows = []
        for i, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            text = tok.decode(ids[mask.bool()].tolist())
            rows.append(tok(self._turn(text, i), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        out = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id, dtype=input_ids.dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return torch.cat([input_ids, out.to(input_ids.device)], dim=1)

    @staticmethod
    def _turn(text: str, row: int) -> str:
        question = _USER.findall(text)[0].strip()
        results = _RESULT.findall(text)
        if not results:
            call = {"name": "web_search", "arguments": {"query": [question]}}
            return f"<think>search</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        if row % 2:
            return "<think>unsure<answer>broken"
        return f"<think>found</think><answer>{best_span(question, results) or 'none'}</answer>"


def _replay(env_kwargs, options, actions):
    """The reward a fresh ``WebResearch-v0`` env gives the same actions."""
    from drgym.env import WebResearchEnv

    env = WebResearchEnv(**env_kwargs)
    env.reset(options=options)
    reward = None
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return reward


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, model):
    return sum(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


@pytest.fixture(scope="module")
def env_factory_run(task, tmp_path_factory):
    from trl import GRPOTrainer

    env_kwargs, texts = task
    model, tokenizer = tiny_model(texts, ScriptedQwen2)
    model.script_tokenizer = tokenizer
    dataset = dtrl.make_dataset(system_prompt=SYSTEM, **env_kwargs).select(range(2))
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=[dtrl.finish_episodes],
        args=config(tmp_path_factory.mktemp("env"), max_tool_calling_iterations=4),
        train_dataset=dataset,
        environment_factory=functools.partial(dtrl.WebResearchToolEnv, **env_kwargs),
    )
    before = _params(trainer.model)
    trainer.train()
    return trainer, before


@pytest.mark.slow
def test_environment_factory_trains_on_the_envs_reward(task, env_factory_run):
    trainer, before = env_factory_run
    log = trainer.state.log_history[0]
    envs = trainer.environments
    rewards = [e.get_reward() for e in envs]
    assert len(envs) == 4 and min(rewards) == -1.0 and max(rewards) >= 0.0  # odd rows broke the format
    assert log["tools/call_frequency"] == 1.0 and log["tools/failure_frequency"] == 0.0
    assert log["rewards/WebResearchToolEnv/mean"] == pytest.approx(sum(rewards) / 4)
    assert _changed(before, trainer.model) > 0
    for env in envs:  # the same turns through a fresh env: the same reward (the env's, not a re-implementation)
        episode = env.env._episode
        options = {"question": episode.record.question, "answers": list(episode.record.answers)}
        actions = [m["content"] for m in episode.messages if m["role"] == "assistant"]
        assert episode.tool_calls == 1 and len(actions) == 2
        assert _replay(task[0], options, actions) == env.get_reward()


@pytest.fixture(scope="module")
def rollout_run(task, tmp_path_factory):
    from trl import GRPOTrainer

    from tests.grpo.conftest import ScriptedPolicy

    env_kwargs, texts = task
    model, tokenizer = tiny_model(texts)
    rollout = dtrl.make_rollout_func(system_prompt=SYSTEM, generator=ScriptedPolicy(model, tokenizer), **env_kwargs)
    dataset = dtrl.make_dataset(system_prompt=SYSTEM, **env_kwargs).select([0, 1])
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=[dtrl.rollout_reward],
        args=config(tmp_path_factory.mktemp("rollout"), num_generations=4, seed=1),
        train_dataset=dataset,
        rollout_func=rollout,
    )
    before = _params(trainer.model)
    trainer.train()
    return trainer, rollout, before


@pytest.mark.slow
def test_rollout_func_trains_on_the_ids_sampled_and_the_envs_reward(task, rollout_run):
    trainer, rollout, before = rollout_run
    log = trainer.state.log_history[0]
    episodes = rollout.episodes
    rewards = [ep.reward for ep in episodes]
    assert len(episodes) == 4 and len(set(rewards)) > 1
    assert log["rewards/rollout_reward/mean"] == pytest.approx(sum(rewards) / 4)
    assert _changed(before, trainer.model) > 0
    fmt = rollout._format(trainer.processing_class)
    for ep, env, index in zip(episodes, rollout.envs, rollout.record_indices):
        assert _replay(task[0], {"index": index}, ep.turns) == ep.reward
        # token-in/token-out: the sequence is the env's conversation rendered turn by turn, the mask is 1 exactly
        # on the policy's turns, and the only id added after the last turn is the template's end of turn (EOS)
        ids, mask = fmt.episode_ids(env._episode.messages[: 2 + 2 * len(ep.turns) - 1])
        sequence, full_mask = ep.prompt_ids + ep.completion_ids, [0] * len(ep.prompt_ids) + ep.env_mask
        assert sequence[: len(ids)] == ids and full_mask[: len(ids)] == mask
        assert sequence[len(ids) :] in ([], [trainer.processing_class.eos_token_id])
        assert len(ep.logprobs) == len(ep.completion_ids)
        assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.env_mask) if not m)


@pytest.mark.slow
def test_no_tool_token_is_in_the_loss(rollout_run):
    trainer, rollout, _ = rollout_run
    assert_no_tool_token_in_the_loss(trainer, rollout, group=4)


def assert_no_tool_token_in_the_loss(trainer, rollout, group):
    """The loss's gradient is 0 at every completion position whose ``env_mask`` is 0, and not 0 elsewhere
    (one batch of ``group`` episodes of the dataset's first question, through TRL's own scoring and loss)."""
    model = trainer.model
    model.train()
    rows = [dict(trainer.train_dataset[0]) for _ in range(group)]  # one group: TRL writes rewards into each row
    inputs = trainer._generate_and_score_completions(rows)
    tool_mask = inputs["tool_mask"]
    assert inputs["advantages"].abs().sum() > 0
    for ep, row in zip(rollout.episodes, tool_mask):
        assert row[: len(ep.env_mask)].tolist() == ep.env_mask
    grads = []

    def keep(module, args, out):
        out.retain_grad()
        grads.append(out)

    # TRL takes log-probs from a fused lm_head: follow the gradient at the final norm's output instead
    handle = model.model.norm.register_forward_hook(keep)
    try:
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
    finally:
        handle.remove()
        model.zero_grad()
    # the hidden state at position P - 1 + j predicts completion token j (P: the padded prompt width)
    start = inputs["prompt_ids"].shape[1] - 1
    grad = grads[0].grad[:, start : start + tool_mask.shape[1]].abs().sum(-1)
    loss_mask = inputs["completion_mask"] * tool_mask
    assert torch.all(grad[loss_mask == 0] == 0)
    assert grad[loss_mask == 1].sum() > 0
    assert (tool_mask == 0).sum() > 20  # the check covered real tool turns


def test_vllm_turns_are_cut_after_the_first_stop_and_keep_the_sampled_logprob(task):
    from drgym.integrations._trl_rollout import VLLMTurnGenerator, _sampled_logprob

    _, tokenizer = tiny_model(task[1])
    turns = VLLMTurnGenerator(vllm_generation=None, tokenizer=tokenizer, stop=dtrl.STOP)
    ids = tokenizer('<think>a</think><answer>Ralun</answer> and more <answer>x</answer>', add_special_tokens=False)
    kept, stopped = turns._cut_at_stop(ids["input_ids"])
    assert stopped and tokenizer.decode(kept) == "<think>a</think><answer>Ralun</answer>"
    assert turns._cut_at_stop(ids["input_ids"][:3]) == (ids["input_ids"][:3], False)
    # vLLM lists a position's logprobs by rank, the sampled token among them (not necessarily first)
    assert _sampled_logprob(7, [-0.1, -2.5], [3, 7]) == -2.5
    assert _sampled_logprob(7, None, None) != _sampled_logprob(7, None, None)  # NaN: vLLM gave none
