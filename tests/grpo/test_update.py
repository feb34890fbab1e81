"""The update on a real tiny model: the mask keeps tool tokens out of the gradient, micro-batching is exact,
and several passes per batch (num_iterations, several optimizer steps) use recomputed old log-probs."""

from __future__ import annotations

import asyncio

import pytest
import torch

from drgym.agents.grpo.losses import forward_logprobs, grpo_loss, pad_batch, token_logprobs
from drgym.agents.grpo.train import setup, update_policy
from tests.grpo.conftest import tiny_config
from tests.grpo.test_train import _params, _scripted_rollouts


def _grads(model, seqs, masks, adv):
    model.zero_grad(set_to_none=True)
    ids, attn, tmask = pad_batch(seqs, masks, 0)
    logp, ent, first = forward_logprobs(model, ids, attn, tmask, with_entropy=True)
    mask = tmask[:, first:]
    terms = grpo_loss(
        logp, logp.detach() + 0.05, torch.tensor(adv), mask, epsilon=0.2, entropy=ent, entropy_coef=0.01
    )
    terms.loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_tool_tokens_after_the_policy_tokens_change_no_gradient(tiny):
    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    prompt, turn = (
        torch.randint(3, 250, (12,), generator=g).tolist(),
        torch.randint(3, 250, (9,), generator=g).tolist(),
    )
    tool_a, tool_b = (
        torch.randint(3, 250, (7,), generator=g).tolist(),
        torch.randint(3, 250, (11,), generator=g).tolist(),
    )
    base = _grads(model, [prompt + turn], [[0] * 12 + [1] * 9], [0.7])
    with_a = _grads(model, [prompt + turn + tool_a], [[0] * 12 + [1] * 9 + [0] * 7], [0.7])
    with_b = _grads(model, [prompt + turn + tool_b], [[0] * 12 + [1] * 9 + [0] * 11], [0.7])
    for name in base:
        assert torch.allclose(base[name], with_a[name], atol=1e-7), name
        assert torch.allclose(base[name], with_b[name], atol=1e-7), name


def test_logits_of_masked_positions_get_exactly_zero_gradient():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 13, generator=g, requires_grad=True)
    targets = torch.randint(0, 13, (2, 6), generator=g)
    mask = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    logp = token_logprobs(logits, targets)
    grpo_loss(
        logp,
        logp.detach() - 0.1,
        torch.tensor([1.0, -0.5]),
        mask,
        epsilon=0.2,
        ref_logprobs=logp.detach(),
        beta=0.1,
    ).loss.backward()
    assert torch.all(logits.grad[mask == 0] == 0)
    assert torch.all(logits.grad[mask == 1].abs().sum(-1) > 0)
    # Changing the targets (the tool text) or the logits at masked positions changes nothing.
    logits2 = logits.detach().clone()
    logits2[mask == 0] += 5.0
    targets2 = torch.where(mask.bool(), targets, (targets + 3) % 13)
    logits2.requires_grad_(True)
    logp2 = token_logprobs(logits2, targets2)
    grpo_loss(
        logp2,
        logp.detach() - 0.1,
        torch.tensor([1.0, -0.5]),
        mask,
        epsilon=0.2,
        ref_logprobs=logp.detach(),
        beta=0.1,
    ).loss.backward()
    assert torch.allclose(logits.grad[mask == 1], logits2.grad[mask == 1], atol=1e-7)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_micro_batches_give_the_update_of_one_big_batch(tmp_path, loss_type):
    results = []
    for micro in (1, 4):
        run = asyncio.run(
            setup(
                tiny_config(
                    tmp_path / str(micro),
                    per_device_train_batch_size=micro,
                    max_completion_length=200,
                    loss_type=loss_type,
                    beta=0.01,
                    max_grad_norm=0.0,
                )
            )
        )
        run.optimizer = torch.optim.SGD(
            run.model.parameters(), lr=1.0
        )  # the parameter change is the gradient
        run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda _: 1.0)
        rollouts = _scripted_rollouts(run)
        before = _params(run.model)
        update_policy(run, rollouts)
        results.append({k: v.detach() - before[k] for k, v in run.model.named_parameters()})
        run.metrics.close()
    for name in results[0]:
        assert torch.allclose(results[0][name], results[1][name], atol=1e-7, rtol=1e-4), name


def test_several_passes_and_optimizer_steps_per_batch(tmp_path):
    cfg = tiny_config(
        tmp_path,
        num_iterations=2,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=2,
        max_completion_length=200,
        learning_rate=5e-2,
        beta=0.01,
    )
    run = asyncio.run(setup(cfg))
    stats = update_policy(run, _scripted_rollouts(run))
    assert stats["losses/optimizer_steps"] == 4  # 4 episodes / (2 x 1) per step, twice
    assert stats["losses/approx_kl_old"] > 0  # later steps see a policy that moved away from the old one
    assert run.scheduler.last_epoch == 4
    run.metrics.close()


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
