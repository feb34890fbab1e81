"""The warm-start's loss weights: the policy's tokens, and optionally the env's text after the first turn."""

from __future__ import annotations

import contextlib

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
