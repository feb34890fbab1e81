"""The warm-start's log-probs: only policy positions are projected, and they match the full logits."""

from __future__ import annotations

import pytest
import torch

from drgym.agents.grpo.losses import aggregate, forward_logprobs, pad_batch


def test_forward_logprobs_projects_only_policy_positions_and_matches_the_full_logits(tiny):
    model, _ = tiny
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (20, 14)]
    masks = [[0] * 5 + [1] * 4 + [0] * 8 + [1] * 3, [0] * 7 + [1] * 2 + [0] * 5]
    ids, attn, tmask = pad_batch(seqs, masks, 0)
    logp, ent, first = forward_logprobs(model, ids, attn, tmask, with_entropy=True)
    assert first == 5 and logp.shape == ent.shape == (2, 20 - 5)
    with torch.no_grad():
        full = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), dim=-1)
    want = full[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)[:, first - 1 :]  # position p from p - 1
    policy = tmask[:, first:].bool()
    assert torch.allclose(logp[policy], want[policy], atol=1e-5)
    # columns where no episode has a policy token are never projected: exactly 0
    unused = ~tmask[:, first:].bool().any(dim=0)
    assert unused.any() and (logp[:, unused] == 0).all() and (ent[:, unused] == 0).all()


def test_aggregate_is_the_weighted_token_mean():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.5, 0.0]])
    assert float(aggregate(values, weights, "dapo")) == pytest.approx((1 + 3 + 2.5) / 2.5)
    assert float(aggregate(values, torch.zeros_like(values))) == 0.0
    with pytest.raises(ValueError, match="warm-start's token mean"):
        aggregate(values, weights, "grpo")
