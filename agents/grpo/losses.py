"""The GRPO math as small pure functions on tensors, so each term can be tested against a plain reference,
and the per-token log-probs of a model that feed it.

Shapes: ``B`` episodes, ``T`` token positions, ``V`` vocabulary. A ``mask`` is 1 exactly on tokens the policy
sampled (tool responses and padding are 0), so nothing the environment wrote ever receives a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOSS_TYPES",
    "LossTerms",
    "aggregate",
    "clip_fraction",
    "entropy_from_logits",
    "forward_logprobs",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "masked_mean",
    "pad_batch",
    "policy_loss_per_token",
    "token_logprobs",
]

LOSS_TYPES = ("dapo", "grpo", "bnpo", "dr_grpo")
"""TRL's ``GRPOConfig.loss_type`` values that this trainer implements, with TRL's meanings (see
:func:`aggregate`)."""

KL_CLAMP = 10.0
"""The k3 estimate is clamped to [-10, 10] per token (as veRL's ``low_var_kl``): one token whose log-ratio
explodes must not dominate the batch."""


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages: ``(r - mean) / (std + eps)`` within each group of ``group_size`` consecutive rewards.

    The std is the unbiased one (``torch.std``'s default, as TRL and veRL use). A group whose rewards are all
    equal gets advantage 0 for every member: it carries no learning signal.

    Args:
        rewards: ``(B,)`` with ``B`` a multiple of ``group_size``; group ``i`` is ``rewards[i*G:(i+1)*G]``.
        group_size: ``G``, the generations per question (>= 2).
        eps: Added to the std.

    Returns:
        ``(B,)`` advantages.
    """
    if group_size < 2 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a length that is a multiple of group_size >= 2; got shape "
            f"{tuple(rewards.shape)} and group_size {group_size}"
        )
    grouped = rewards.float().view(-1, group_size)  # (B/G, G)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each target token under ``softmax(logits / temperature)``.

    Dividing by the sampling temperature makes these the same quantity the sampler reported, so the ratio to
    the sampling log-probs is 1 for an unchanged policy.

    Args:
        logits: ``(..., V)``.
        targets: ``(...)`` token ids.
    """
    import torch

    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(scaled, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` at each position: ``(..., V) -> (...)``."""
    import torch

    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(scaled, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) by the k3 estimator: ``exp(ref - logp) - (ref - logp) - 1``.

    Unbiased, always >= 0, and of low variance for tokens sampled from the policy
    (http://joschu.net/blog/kl-approx.html); veRL calls it ``low_var_kl``. Clamped to ``±KL_CLAMP``.
    """
    import torch

    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # keep exp() finite
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-KL_CLAMP, KL_CLAMP)


def policy_loss_per_token(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """PPO's clipped surrogate, negated (a loss), per token.

    Args:
        logprobs: ``(B, T)`` under the policy being optimised.
        old_logprobs: ``(B, T)`` under the policy that the batch is attributed to (no gradient).
        advantages: ``(B,)`` one advantage per episode, shared by its tokens, or ``(B, T)``.
        epsilon: Clip range of the ratio.
    """
    import torch

    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    ratio = torch.exp(logprobs - old_logprobs.detach())
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    return torch.max(pg_loss1, pg_loss2)


def clip_fraction(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Per token, 1.0 where the clip is active (the gradient of that token is zero), else 0.0."""
    import torch

    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logprobs.detach() - old_logprobs.detach())
    clipped = ((ratio > 1 + epsilon) & (adv > 0)) | ((ratio < 1 - epsilon) & (adv < 0))
    return clipped.float()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    *,
    num_items: float | None = None,
    num_micro_batches: int = 1,
    max_completion_length: int | None = None,
) -> torch.Tensor:
    """Reduce a ``(B, T)`` per-token loss of one micro-batch to a scalar, as TRL's ``GRPOTrainer`` does.

    The four ``loss_type`` values are TRL's, with TRL's normalisation (``trl/trainer/grpo_trainer.py``); the
    gradients of the micro-batches of one optimizer step are summed:

    - ``dapo`` (TRL's default): the token sum divided by ``num_items``, the policy tokens of the *whole*
      optimizer step, so every token weighs the same and accumulation gives the full-batch loss exactly.
    - ``bnpo``: the token mean of this micro-batch, divided by ``num_micro_batches``.
    - ``grpo``: each episode's token mean, averaged over the micro-batch's episodes, divided by
      ``num_micro_batches`` (the original GRPO; shorter episodes weigh more per token).
    - ``dr_grpo``: the token sum divided by ``B * max_completion_length`` (a constant, Dr. GRPO), divided by
      ``num_micro_batches``.

    Args:
        num_items: ``dapo``: policy tokens of the whole optimizer step (``None``: this micro-batch's).
        num_micro_batches: Micro-batches accumulated into the optimizer step (TRL's
            ``current_gradient_accumulation_steps``).
        max_completion_length: ``dr_grpo``'s constant.
    """
    mask = mask.to(per_token.dtype)
    total = (per_token * mask).sum()
    if loss_type == "dapo":
        count = mask.sum() if num_items is None else per_token.new_tensor(float(num_items))
        return total / count.clamp(min=1.0)
    if loss_type == "bnpo":
        loss = total / mask.sum().clamp(min=1.0)
    elif loss_type == "grpo":
        loss = ((per_token * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)).mean()
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type dr_grpo needs max_completion_length (its normalising constant)")
        loss = total / (per_token.shape[0] * max_completion_length)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    return loss / num_micro_batches


@dataclass(frozen=True)
class LossTerms:
    """The scalar loss and its parts (detached parts, for logging)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    entropy: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl_old: torch.Tensor


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    loss_type: str = "dapo",
    num_items: float | None = None,
    num_micro_batches: int = 1,
    max_completion_length: int | None = None,
) -> LossTerms:
    """The GRPO objective: clipped surrogate + ``beta`` k3 KL to the reference - ``entropy_coef`` entropy.

    All three terms are reduced with the same :func:`aggregate`, so the loss equals
    ``agg(pg) + beta * agg(kl) - entropy_coef * agg(entropy)``. The logged KL, entropy and clip fraction are
    plain token means over the mask.
    """
    import torch

    def agg(values: torch.Tensor) -> torch.Tensor:
        return aggregate(
            values,
            mask,
            loss_type,
            num_items=num_items,
            num_micro_batches=num_micro_batches,
            max_completion_length=max_completion_length,
        )

    per_token = policy_loss_per_token(logprobs, old_logprobs, advantages, epsilon)  # (B, T)
    pg = agg(per_token)
    loss = pg
    zero = torch.zeros((), device=logprobs.device)
    kl_mean = zero
    if ref_logprobs is not None and beta > 0:
        kl = k3_kl(logprobs, ref_logprobs)
        loss = loss + beta * agg(kl)
        kl_mean = masked_mean(kl.detach(), mask)
    ent_mean = zero
    if entropy is not None:
        if entropy_coef > 0:
            loss = loss - entropy_coef * agg(entropy)
        ent_mean = masked_mean(entropy.detach(), mask)
    with torch.no_grad():
        clipped = masked_mean(clip_fraction(logprobs, old_logprobs, advantages, epsilon), mask)
        approx_kl = masked_mean(0.5 * (logprobs.detach() - old_logprobs) ** 2, mask)
    return LossTerms(loss, pg.detach(), kl_mean, ent_mean, clipped, approx_kl)


# ------------------------------------------------------------------------------------ model log-probs


def pad_batch(
    sequences: list[list[int]], masks: list[list[int]], pad_token_id: int, device: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token sequences into ``(input_ids, attention_mask, token_mask)``, each ``(B, L)``.

    ``token_mask[b, j]`` is 1 when token ``j`` of sequence ``b`` is a policy token (``masks`` aligned with
    ``sequences``); padding is 0 everywhere. Right padding keeps the default position ids correct.
    """
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    tmask = torch.zeros((len(sequences), width), dtype=torch.float32)
    for b, (seq, m) in enumerate(zip(sequences, masks)):
        if len(seq) != len(m):
            raise ValueError(f"sequence {b} has {len(seq)} tokens but a mask of {len(m)}")
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[b, : len(seq)] = 1
        tmask[b, : len(seq)] = torch.tensor(m, dtype=torch.float32)
    return ids.to(device), attn.to(device), tmask.to(device)


def forward_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Log-prob (and entropy) of every policy token of the batch, in a ``(B, L - first)`` frame.

    The vocabulary projection, the biggest cost of a small model (a tiny model's 64-wide hidden state meets a
    vocabulary of thousands), runs only at the positions that predict a policy token of some episode
    (``logits_to_keep`` given those positions): tool responses and the prompt cost no logits. The log-softmax
    runs one row at a time, bounding the ``(T, V)`` float32 temporaries to one sequence.

    Returns:
        ``(logprobs, entropy, first)``: ``(B, L - first)`` tensors where column ``k`` is token position
        ``first + k`` (its log-prob given the tokens before it; 0 at positions no episode has a policy token
        at), and ``first``, the earliest token position with a policy token (``L - 1`` when there is none).
    """
    import torch

    length = input_ids.shape[1]
    wanted = token_mask[:, 1:].bool().any(dim=0).nonzero().squeeze(-1) + 1  # positions of policy tokens
    if not wanted.numel():
        wanted = torch.tensor([length - 1], device=input_ids.device)
    first = int(wanted[0])
    try:
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=wanted - 1, use_cache=False
        )
        logits = out.logits  # (B, len(wanted), V): logits at position p - 1 predict token p
    except TypeError:  # a model without logits_to_keep
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, wanted - 1]
    targets = input_ids[:, wanted]
    scale = temperature if temperature > 0 else 1.0
    lps, ents = [], []
    for b in range(input_ids.shape[0]):
        logp = torch.log_softmax(logits[b].float() / scale, dim=-1)  # (K, V)
        lps.append(logp.gather(-1, targets[b, :, None]).squeeze(-1))
        if with_entropy:
            ents.append(-(logp.exp() * logp).sum(dim=-1))
    columns = wanted - first
    logprobs = _spread(torch.stack(lps), columns, length - first)
    entropy = _spread(torch.stack(ents), columns, length - first) if with_entropy else None
    return logprobs, entropy, first


def _spread(values: torch.Tensor, columns: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, K)`` values placed at ``columns`` of a ``(B, width)`` frame of zeros (differentiably)."""
    import torch

    out = torch.zeros((values.shape[0], width), dtype=values.dtype, device=values.device)
    return out.index_copy(1, columns, values)
