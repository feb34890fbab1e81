"""Per-token log-probs of a model, and their weighted mean: what the supervised warm-start trains on.

The GRPO loss itself is TRL's (``trl.GRPOTrainer.compute_loss``: group advantages, the clipped surrogate, KL,
entropy, ``loss_type``); this module keeps only the pieces of the warm-start's cross-entropy.

Shapes: ``B`` episodes, ``T`` token positions, ``V`` vocabulary. A ``mask`` (or weight) is 1 on tokens the
policy wrote; tool responses and padding are 0 unless the warm-start weighs the env's text in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["aggregate", "forward_logprobs", "pad_batch"]


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str = "dapo") -> torch.Tensor:
    """The ``mask``-weighted mean of a ``(B, T)`` per-token value (TRL's ``dapo`` normalisation: every token
    weighs the same); 0 when the mask is empty."""
    if loss_type != "dapo":
        raise ValueError(f"aggregate implements the warm-start's token mean (loss_type 'dapo'), not {loss_type!r}")
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


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
