"""Each GRPO loss term against a straightforward per-element reference on random tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from drgym.agents.grpo.losses import (
    KL_CLAMP,
    aggregate,
    clip_fraction,
    entropy_from_logits,
    group_advantages,
    grpo_loss,
    k3_kl,
    masked_mean,
    policy_loss_per_token,
    token_logprobs,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(seed: int = 0, b: int = 6, t: int = 9):
    g = _gen(seed)
    logp = -torch.rand(b, t, generator=g) * 3
    old = logp + 0.4 * torch.randn(b, t, generator=g)
    ref = logp + 0.6 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    mask = (torch.rand(b, t, generator=g) > 0.3).float()
    mask[0] = 0.0  # an episode with no policy token at all
    mask[1, :] = 1.0
    return logp, old, ref, adv, mask


def test_group_advantages_match_per_group_formula():
    rewards = torch.tensor([1.0, 0.0, 0.5, -1.0, 0.2, 0.2, 0.2, 0.2, 3.0, -2.0, 0.0, 1.0])
    got = group_advantages(rewards, 4, eps=1e-6)
    for start in range(0, 12, 4):
        group = rewards[start : start + 4].tolist()
        mean = sum(group) / 4
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / 3)  # unbiased
        for i, r in enumerate(group):
            assert got[start + i].item() == pytest.approx((r - mean) / (std + 1e-6), rel=1e-5, abs=1e-6)


def test_equal_rewards_give_zero_advantage():
    assert torch.equal(group_advantages(torch.full((6,), 0.7), 3), torch.zeros(6))


@pytest.mark.parametrize("shape,g", [((5,), 2), ((4,), 1), ((2, 2), 2)])
def test_group_advantages_reject_bad_shapes(shape, g):
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(shape), g)


def test_token_logprobs_and_entropy_match_reference():
    g = _gen(1)
    logits = torch.randn(3, 5, 11, generator=g) * 2
    targets = torch.randint(0, 11, (3, 5), generator=g)
    for temp in (1.0, 0.7):
        lp = token_logprobs(logits, targets, temp)
        ent = entropy_from_logits(logits, temp)
        for b in range(3):
            for t in range(5):
                row = [x / temp for x in logits[b, t].tolist()]
                z = math.log(sum(math.exp(x) for x in row))
                probs = [math.exp(x - z) for x in row]
                assert lp[b, t].item() == pytest.approx(row[targets[b, t]] - z, abs=1e-5)
                assert ent[b, t].item() == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-5)


def test_k3_kl_matches_formula_and_is_nonnegative():
    logp, _, ref, _, _ = _batch(2)
    kl = k3_kl(logp, ref)
    for a, b, k in zip(logp.flatten().tolist(), ref.flatten().tolist(), kl.flatten().tolist()):
        assert k == pytest.approx(math.exp(b - a) - (b - a) - 1, rel=1e-5, abs=1e-6)
        assert k >= 0
    assert torch.equal(k3_kl(logp, logp), torch.zeros_like(logp))
    assert k3_kl(torch.tensor([-30.0]), torch.tensor([0.0])).item() == KL_CLAMP  # huge ratio is clamped


def test_k3_estimates_the_true_kl_on_samples():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    samples = torch.multinomial(p, 200_000, replacement=True, generator=_gen(3))
    estimate = k3_kl(p.log()[samples], q.log()[samples]).mean().item()
    assert estimate == pytest.approx((p * (p / q).log()).sum().item(), rel=0.03)


def test_policy_loss_is_the_clipped_surrogate():
    logp, old, _, adv, _ = _batch(4)
    eps = 0.2
    got = policy_loss_per_token(logp, old, adv, eps)
    clip = clip_fraction(logp, old, adv, eps)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            ratio = math.exp(logp[b, t].item() - old[b, t].item())
            a = adv[b].item()
            want = max(-a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps))
            assert got[b, t].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
            active = (ratio > 1 + eps and a > 0) or (ratio < 1 - eps and a < 0)
            assert clip[b, t].item() == float(active)


def test_clipped_tokens_get_no_gradient():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, 0.0]])  # first token: ratio e > 1.2
    policy_loss_per_token(logp, old, torch.tensor([1.0]), 0.2).sum().backward()
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-1.0)


def _trl_reference(values, mask, loss_type, *, accumulation, num_items, max_completion_length):
    """TRL's GRPOTrainer._compute_loss reductions (trl/trainer/grpo_trainer.py), written out plainly."""
    if loss_type == "grpo":
        return ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return (values * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return (values * mask).sum() / (values.size(0) * max_completion_length) / accumulation
    return (values * mask).sum() / num_items  # dapo: the tokens of the whole accumulated batch


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
def test_loss_types_reduce_as_trl_does(loss_type):
    g = _gen(5)
    values = torch.randn(4, 7, generator=g)
    mask = (torch.rand(4, 7, generator=g) > 0.4).float()
    mask[2] = 0
    kw = {"accumulation": 3, "num_items": 40.0, "max_completion_length": 50}
    got = aggregate(
        values, mask, loss_type, num_items=40.0, num_micro_batches=3, max_completion_length=50
    )
    assert got.item() == pytest.approx(_trl_reference(values, mask, loss_type, **kw).item(), rel=1e-6)


def test_loss_types_by_hand():
    values = torch.tensor([[1.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(values, mask, "dapo").item() == pytest.approx(8 / 3)  # every token weighs the same
    assert aggregate(values, mask, "grpo").item() == pytest.approx((2 + 4) / 2)  # episode means, averaged
    assert aggregate(values, mask, "bnpo", num_micro_batches=2).item() == pytest.approx(8 / 3 / 2)
    assert aggregate(values, mask, "dr_grpo", max_completion_length=4).item() == pytest.approx(8 / 8)
    assert masked_mean(values, mask).item() == pytest.approx(8 / 3)
    with pytest.raises(ValueError, match="unknown loss_type 'token_mean'; valid: dapo, grpo, bnpo, dr_grpo"):
        aggregate(values, mask, "token_mean")
    with pytest.raises(ValueError, match="dr_grpo needs max_completion_length"):
        aggregate(values, mask, "dr_grpo")


def test_dapo_micro_batches_with_the_step_token_count_add_up_to_the_full_batch():
    logp, old, ref, adv, mask = _batch(6)
    kw = {"epsilon": 0.2, "beta": 0.01, "entropy": torch.rand_like(logp), "entropy_coef": 0.05,
          "loss_type": "dapo"}
    full = grpo_loss(logp, old, adv, mask, ref_logprobs=ref, **kw).loss
    parts = sum(
        grpo_loss(
            logp[s],
            old[s],
            adv[s],
            mask[s],
            ref_logprobs=ref[s],
            num_items=mask.sum().item(),
            **{**kw, "entropy": kw["entropy"][s]},
        ).loss
        for s in (slice(0, 2), slice(2, 5), slice(5, 6))
    )
    assert parts.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_equal_micro_batches_average_to_the_full_batch(loss_type):
    """With equal-sized micro-batches, TRL's per-micro-batch reductions over the accumulation steps equal
    the reduction of the whole batch (grpo, dr_grpo exactly; bnpo when the token counts are equal too)."""
    logp, old, _, adv, mask = _batch(6)
    if loss_type == "bnpo":
        mask = torch.ones_like(mask)
    kw = {"epsilon": 0.2, "loss_type": loss_type, "max_completion_length": 9}
    full = grpo_loss(logp, old, adv, mask, **kw).loss
    parts = sum(
        grpo_loss(logp[s], old[s], adv[s], mask[s], num_micro_batches=3, **kw).loss
        for s in (slice(0, 2), slice(2, 4), slice(4, 6))
    )
    assert parts.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_grpo_loss_combines_the_terms(loss_type):
    logp, old, ref, adv, mask = _batch(7)
    ent = torch.rand_like(logp)
    terms = grpo_loss(
        logp,
        old,
        adv,
        mask,
        epsilon=0.2,
        ref_logprobs=ref,
        beta=0.3,
        entropy=ent,
        entropy_coef=0.1,
        loss_type=loss_type,
    )
    agg = lambda x: aggregate(x, mask, loss_type)
    want = agg(policy_loss_per_token(logp, old, adv, 0.2)) + 0.3 * agg(k3_kl(logp, ref)) - 0.1 * agg(ent)
    assert terms.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert terms.kl.item() == pytest.approx(masked_mean(k3_kl(logp, ref), mask).item(), rel=1e-5)
    assert terms.entropy.item() == pytest.approx(masked_mean(ent, mask).item(), rel=1e-5)
    # beta = 0 drops the reference term entirely, whatever the reference says
    no_kl = grpo_loss(
        logp, old, adv, mask, epsilon=0.2, ref_logprobs=ref * 100, beta=0.0, loss_type=loss_type
    )
    assert no_kl.loss.item() == pytest.approx(
        agg(policy_loss_per_token(logp, old, adv, 0.2)).item(), rel=1e-5
    )


def test_ratio_one_gives_the_plain_policy_gradient():
    logp, _, _, adv, mask = _batch(8)
    logp = logp.clone().requires_grad_(True)
    grpo_loss(logp, logp.detach(), adv, mask, epsilon=0.2).loss.backward()
    want = -adv[:, None] * mask / mask.sum()
    assert torch.allclose(logp.grad, want, atol=1e-6)
