"""Rollouts: token bookkeeping (ids, mask, tool turns), sampled ids equal trained ids, limits and failures."""

from __future__ import annotations

import asyncio

import pytest
import torch

from drgym.agents.grpo.losses import forward_logprobs, pad_batch
from drgym.agents.grpo.rollout import (
    ChatFormat,
    HFGenerator,
    build_task,
    collect_rollouts,
    make_envs,
    sample_seed,
)
from drgym.env import WebResearchEnv
from drgym.errors import ConfigError
from tests.grpo.conftest import ScriptedPolicy, tiny_config


def _play(cfg, generator, fmt, *, envs=None, indices=None, group=None):
    task = build_task(cfg)
    envs = envs or make_envs(task, cfg.rollout_batch_size)
    indices = indices or task.train_indices[: cfg.prompts_per_step]
    rollouts = asyncio.run(
        collect_rollouts(
            envs, generator, fmt, task.records, indices, cfg, step=0, group_size=group or cfg.num_generations
        )
    )
    return task, envs, rollouts


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


def test_multi_turn_rollout_tokens_mask_and_reward(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_config(tmp_path, max_completion_length=200)
    fmt = ChatFormat(tok, system_prompt=cfg.system_prompt)
    policy = ScriptedPolicy(model, tok)
    _, envs, rollouts = _play(cfg, policy, fmt)
    assert [r.group for r in rollouts] == [0, 0, 1, 1]
    for r, env in zip(rollouts, envs):
        assert r.error is None and len(r.turns) == 2 and r.tool_calls == 1
        assert len(r.mask) == len(r.completion_ids) == len(r.sampling_logprobs)
        # The whole sequence is exactly the chat template of the env's conversation.
        messages = fmt.messages(env._episode.messages)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        assert messages[last]["content"] == r.turns[-1]
        assert (
            tok.decode(r.input_ids) == fmt.render(messages[:last], add_generation_prompt=True) + r.turns[-1]
        )
        # Mask 1 exactly on the policy's turns, 0 on the tool turn.
        policy_text = tok.decode([t for t, m in zip(r.completion_ids, r.mask) if m])
        assert policy_text == "".join(r.turns)
        tool_text = tok.decode([t for t, m in zip(r.completion_ids, r.mask) if not m])
        assert tool_text.startswith("<|im_end|>\n<|im_start|>user\n<tool_response>\nResults for query")
        assert all(lp == 0.0 for lp, m in zip(r.sampling_logprobs, r.mask) if not m)
    assert any(not r.format_ok for r in rollouts) and any(r.format_ok and r.answered for r in rollouts)
    for r in rollouts:
        assert r.reward == (r.f1 if r.format_ok else -1.0)
        assert r.format_ok == r.turns[-1].endswith("</answer>")


def test_trained_ids_are_the_sampled_ids(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_config(tmp_path, max_completion_length=24, temperature=1.0)
    fmt = ChatFormat(tok, system_prompt=cfg.system_prompt)
    sampled = []

    class Recording(HFGenerator):
        def generate(self, *args, **kw):
            out = super().generate(*args, **kw)
            sampled.append(out)
            return out

    _, _, rollouts = _play(cfg, Recording(model, tok, stop=cfg.stop), fmt)
    first_turn = sampled[0]
    for r, sample in zip(rollouts, first_turn):
        assert r.completion_ids[: len(sample.token_ids)] == sample.token_ids
        assert [t for t, m in zip(r.completion_ids, r.mask) if m][: len(sample.token_ids)] == sample.token_ids
    # The trainer's log-probs of those ids (a fresh, padded, uncached forward) agree with the sampler's.
    ids, attn, tmask = pad_batch(
        [r.input_ids for r in rollouts],
        [[0] * len(r.prompt_ids) + r.mask for r in rollouts],
        tok.pad_token_id,
    )
    with torch.no_grad():
        logp, _, first = forward_logprobs(model, ids, attn, tmask)
    for b, r in enumerate(rollouts):
        start = len(r.prompt_ids) - first
        got = logp[b, start : start + len(r.completion_ids)]
        want = torch.tensor(r.sampling_logprobs)
        assert torch.allclose(got * tmask[b, first + start : first + start + len(want)], want, atol=1e-4)


def test_sampling_is_seeded_and_resumable(tiny):
    model, tok = tiny
    gen = HFGenerator(model, tok, stop=["</answer>"])
    prompts = [
        tok("hello", add_special_tokens=False)["input_ids"],
        tok("a longer prompt", add_special_tokens=False)["input_ids"],
    ]
    a = gen.generate(prompts, [10, 6], temperature=1.0, seeds=[1, 2])
    b = gen.generate(prompts, [10, 6], temperature=1.0, seeds=[1, 2])
    c = gen.generate(prompts[:1], [10], temperature=1.0, seeds=[1])
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    assert a[0].token_ids == c[0].token_ids  # a row's draw does not depend on its batch
    assert len(a[1].token_ids) <= 6 and a[1].finish_reason in ("length", "stop")
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2) != sample_seed(0, 1, 3)


def test_context_overflow_ends_the_episode_truncated(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_config(tmp_path, max_completion_length=200, max_seq_length=330, max_prompt_length=200)
    fmt = ChatFormat(tok, system_prompt=cfg.system_prompt)
    _, _, rollouts = _play(cfg, ScriptedPolicy(model, tok), fmt)
    for r in rollouts:
        assert r.truncated and r.context_overflow and r.reward == -1.0 and r.error is None
        assert len(r.input_ids) <= cfg.max_seq_length
        assert len(r.turns) == 1  # the search turn; its results did not fit


def test_too_long_prompt_fails_only_that_episode(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_config(tmp_path, max_prompt_length=40)
    fmt = ChatFormat(tok, system_prompt=cfg.system_prompt)
    _, _, rollouts = _play(cfg, ScriptedPolicy(model, tok), fmt)
    assert all(r.error and "max_prompt_length=40" in r.error and r.reward == -1.0 for r in rollouts)
    assert all(r.policy_tokens == 0 for r in rollouts)


class _CrashingEnv(WebResearchEnv):
    """The real env, except that the second step of one question raises (a bug, not a tool fault the env
    turns into an observation)."""

    poison = ""

    async def astep(self, action: str):
        episode = self._episode
        if episode is not None and episode.record.question == self.poison and episode.turn >= 1:
            raise RuntimeError("env exploded")
        return await super().astep(action)


def test_an_episode_that_errors_gets_the_format_reward_and_the_batch_goes_on(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_config(tmp_path, max_completion_length=200)
    fmt = ChatFormat(tok, system_prompt=cfg.system_prompt)
    task = build_task(cfg)
    indices = task.train_indices[:2]
    _CrashingEnv.poison = task.records[indices[0]].question
    envs = make_envs(task, 4, factory=_CrashingEnv)
    policy = ScriptedPolicy(model, tok)
    played = collect_rollouts(envs, policy, fmt, task.records, indices, cfg, step=0, group_size=2)
    rollouts = asyncio.run(played)
    for r in rollouts[:2]:
        assert "env exploded" in r.error and r.reward == -1.0 and len(r.turns) == 2 and r.policy_tokens > 0
    for r in rollouts[2:]:
        assert r.error is None and len(r.turns) == 2


def test_synthetic_entities_make_held_out_questions_name_trained_entities(tmp_path):
    cfg = tiny_config(tmp_path, num_train_questions=40, num_eval_questions=8, synthetic_entities=16)
    task = build_task(cfg)
    entity = [r.metadata["support"][0] for r in task.records]
    assert len(set(entity)) <= 16 and len(task.records) == 48
    trained = {entity[i] for i in task.train_indices}
    assert sum(entity[i] in trained for i in task.eval_indices) >= 6
    assert not set(task.train_indices) & set(task.eval_indices)
