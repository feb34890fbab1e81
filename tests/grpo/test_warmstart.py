"""The warm-start's loss weights: the policy's tokens, and optionally the env's text after the first turn."""

from __future__ import annotations

import contextlib

import pytest
import torch

from drgym.agents.grpo.losses import forward_logprobs, pad_batch
from drgym.agents.grpo.warmstart import Demonstration, _token_weights, supervised_warmstart
from tests.grpo.conftest import tiny_config


def test_token_weights_cover_the_env_text_after_the_first_turn_only():
    policy = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    attn = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    assert torch.equal(_token_weights(policy, attn, 0.0), policy)
    want = torch.tensor([[0, 0, 1, 1, 0.5, 0.5, 1, 0.5], [0, 1, 0.5, 0.5, 0.5, 0, 0, 0]])
    assert torch.equal(_token_weights(policy, attn, 0.5), want)  # never the prompt, never padding


def _env_logprob(model, demo):
    ids, attn, tmask = pad_batch([demo.ids], [demo.mask], 0)
    env = _token_weights(tmask, attn, 1.0) - tmask
    with torch.no_grad():
        logp, _, first = forward_logprobs(model, ids, attn, env)
    return float((logp * env[:, first:]).sum())


def test_env_loss_weight_trains_the_model_on_the_env_text(tiny, tmp_path):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (30,), generator=g).tolist()
    demo = Demonstration(ids, [0] * 6 + [1] * 6 + [0] * 12 + [1] * 6, 1.0, 0)
    gains = {}
    for weight in (0.0, 1.0):
        model, _ = tiny
        model = type(model)(model.config)
        model.load_state_dict(tiny[0].state_dict())
        before = _env_logprob(model, demo)
        cfg = tiny_config(tmp_path, warmstart_steps=30, warmstart_learning_rate=3e-3,
                          warmstart_env_loss_weight=weight)
        supervised_warmstart(model, [demo], cfg, pad_token_id=0, autocast=contextlib.nullcontext)
        gains[weight] = _env_logprob(model, demo) - before
    assert gains[1.0] > gains[0.0] + 5.0  # only the weighted run learns to predict the env's tokens


def test_teacher_passes_repeat_the_questions_when_there_are_more_episodes():
    from drgym.agents.grpo.warmstart import teacher_passes

    assert teacher_passes([3, 1, 2], 2) == [[3, 1]]
    assert teacher_passes([3, 1, 2], 7) == [[3, 1, 2], [3, 1, 2], [3]]
    assert teacher_passes([], 4) == []


def test_each_teacher_pass_moves_the_agent_seed_on(caplog):
    from drgym.agents.grpo.warmstart import pass_agent_kwargs
    from drgym.agents.scripted import ScriptedAgent

    kwargs = {"wrong_result_rate": 0.7}
    assert pass_agent_kwargs(ScriptedAgent, kwargs, 0) == kwargs  # the first pass: exactly as configured
    assert pass_agent_kwargs(ScriptedAgent, kwargs, 2) == {"wrong_result_rate": 0.7, "seed": 2}
    assert pass_agent_kwargs(ScriptedAgent, {"seed": 5}, 3) == {"seed": 8}

    class Seedless:
        def __init__(self, depth: int = 1) -> None: ...

    assert pass_agent_kwargs(Seedless, {"depth": 2}, 1) == {"depth": 2}
    assert "takes no seed" in caplog.text


def test_repeated_passes_show_the_noisy_teachers_spread_on_one_question(tmp_path):
    import asyncio

    from drgym.agents.grpo.checkpoint import build_model
    from drgym.agents.grpo.rollout import build_task, make_envs
    from drgym.agents.grpo.warmstart import collect_teacher_passes, teacher_passes
    from drgym.agents.scripted import ScriptedAgent
    from drgym.llm.token_turns import ChatFormat

    cfg = tiny_config(tmp_path, tiny_vocab="word", synthetic_kinds=["population"], synthetic_neighbours=True,
                      num_train_questions=8, num_eval_questions=4)
    task = build_task(cfg)
    _, tok = build_model(cfg, task.texts)
    fmt = ChatFormat(tok, system_prompt=cfg.system_prompt)
    envs = make_envs(task, 4)
    teacher = {"pages_to_read": 0, "named_result_only": True, "wrong_result_rate": 0.5}
    demos, metrics = asyncio.run(collect_teacher_passes(
        envs, ScriptedAgent, teacher, teacher_passes(task.train_indices, 32), fmt, min_reward=-1.0,
        max_seq_length=4096,
    ))
    assert metrics["warmstart/episodes"] == 32 == metrics["warmstart/demonstrations"] == len(demos)
    assert metrics["warmstart/agent_reward_mean"] == pytest.approx(sum(d.reward for d in demos) / 32)
    answers: dict[int, set[str]] = {}
    for demo in demos:
        answers.setdefault(demo.record_index, set()).add(tok.decode(demo.ids).rsplit("<answer>", 1)[-1])
    assert len(answers) == 8
    assert sum(len(a) > 1 for a in answers.values()) >= 4  # most questions get more than one answer
