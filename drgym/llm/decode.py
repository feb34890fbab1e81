"""KV-cached, batched sampling from a causal LM: the one decoder behind local chat clients and GRPO rollouts.

Rows are left-padded so every row's next token sits in the last column; each row has its own seeded
``torch.Generator``, its own sampling settings, token budget and stop strings, so a row's draw does not depend
on the rows it is batched with. Logprobs are of the temperature-scaled distribution before top-k/top-p
filtering (what a policy-gradient loss recomputes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["DecodeRow", "decode", "sample_tokens"]


@dataclass
class DecodeRow:
    """One sequence to decode, and what decoding it produced.

    ``finish_reason`` is ``"stop"`` (an end-of-sequence token, recorded in ``stop_reason``, or one of ``stop``
    completed) or ``"length"`` (``budget`` tokens generated).
    """

    prompt_ids: list[int]
    budget: int
    seed: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: Sequence[str] = ()
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | None = None


def decode(
    model: Any,
    tokenizer: Any,
    rows: Sequence[DecodeRow],
    *,
    eos_token_ids: Collection[int],
    pad_token_id: int,
    autocast_dtype: Any = None,
) -> None:
    """Decode every row until it stops, filling ``token_ids``, ``logprobs`` and ``finish_reason`` in place.

    A finished row is fed the pad token until the others finish (its outputs are ignored). The model's
    training/eval mode is restored afterwards.
    """
    import torch

    if not rows:
        return
    device = next(model.parameters()).device
    width = max(len(r.prompt_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
        mask[i, width - len(r.prompt_ids) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(int(r.seed)) for r in rows]
    temperature = torch.tensor([float(r.temperature) for r in rows], dtype=torch.float32, device=device)
    top_p = torch.tensor([float(r.top_p) for r in rows], dtype=torch.float32, device=device)
    top_k = torch.tensor([max(int(r.top_k), 0) for r in rows], dtype=torch.long, device=device)
    autocast = (
        contextlib.nullcontext() if autocast_dtype is None else torch.autocast(device.type, dtype=autocast_dtype)
    )
    for row in rows:
        if row.budget <= 0:
            row.finish_reason = "length"
    was_training = model.training
    model.eval()
    past = None
    try:
        with torch.inference_mode(), autocast:
            while any(r.finish_reason is None for r in rows):
                out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            past_key_values=past, use_cache=True)
                past = out.past_key_values
                uniform = torch.tensor([torch.rand(1, generator=g).item() for g in generators],
                                       dtype=torch.float32, device=device)
                tokens, logprobs = sample_tokens(out.logits[:, -1, :].float(), temperature, top_p, top_k, uniform)
                for row, token, logprob in zip(rows, tokens.tolist(), logprobs.tolist()):
                    if row.finish_reason is None:
                        _append(row, token, logprob, tokenizer, eos_token_ids)
                running = torch.tensor([r.finish_reason is None for r in rows], device=device)
                ids = torch.where(running, tokens, pad_token_id)[:, None]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = positions[:, -1:] + 1
    finally:
        model.train(was_training)


def _append(row: DecodeRow, token: int, logprob: float, tokenizer: Any, eos_token_ids: Collection[int]) -> None:
    row.token_ids.append(token)
    row.logprobs.append(logprob)
    if token in eos_token_ids:
        row.finish_reason, row.stop_reason = "stop", token
    elif row.stop and _tail_has_stop(row, tokenizer):
        row.finish_reason = "stop"
    elif len(row.token_ids) >= row.budget:
        row.finish_reason = "length"


def _tail_has_stop(row: DecodeRow, tokenizer: Any) -> bool:
    # A stop string completed by the newest token lies within the last few tokens: decode only those.
    window = 2 * max(len(s) for s in row.stop) + 8
    tail = tokenizer.decode(row.token_ids[-window:], skip_special_tokens=True)
    return any(s in tail for s in row.stop)


def sample_tokens(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
    uniform: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by inverse-CDF with the given uniforms; return tokens and their logprobs.

    Args:
        logits: ``(B, V)`` float logits of the next token.
        temperature: ``(B,)``; 0 means greedy (argmax).
        top_p: ``(B,)`` nucleus mass; 1 keeps all.
        top_k: ``(B,)`` tokens kept; 0 keeps all.
        uniform: ``(B,)`` draws in ``[0, 1)`` from each row's own generator.

    Returns:
        ``(B,)`` token ids and ``(B,)`` logprobs under the temperature-scaled, unfiltered distribution.
    """
    import torch

    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    logprobs = torch.log_softmax(scaled, dim=-1)  # (B, V)
    vocab = logits.shape[-1]
    if bool(((top_k > 0) | (top_p < 1)).any()):
        sorted_lp, order = logprobs.sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        ranks = torch.arange(vocab, device=logits.device)[None, :]
        drop = (top_k[:, None] > 0) & (ranks >= top_k[:, None])
        drop |= (probs.cumsum(-1) - probs) >= top_p[:, None]  # mass before this token already reaches top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    else:
        order, probs = None, logprobs.exp()
    cdf = probs.cumsum(-1)
    target = (uniform * cdf[:, -1])[:, None].contiguous()
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1)  # (B, 1)
    sampled = (index if order is None else order.gather(1, index)).squeeze(1)
    tokens = torch.where(greedy, logits.argmax(dim=-1), sampled)
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)
