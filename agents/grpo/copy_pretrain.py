"""Copy pre-training: teach a model from scratch to copy from its context before it imitates anyone.

Every answer in the research task is a copy: the asked name into the query, a sentence of a search result
into the thought, its value into the answer. A randomly initialised model learns in-context copying only once
an attention head finds the earlier position to copy from *and* a value circuit maps a token back to itself;
each one's gradient is scaled by the other, so imitation alone sits on a plateau (the induction-head
plateau), and on a small task it never leaves it: memorising the training answers lowers the loss sooner.

This stage gives the skill a dense signal it cannot get by memorising: sequences of random words, then the
same words again, with the loss on the repeat (every repeated token is a copy target, and no word sequence
ever comes back). The tiny model learns it in a few hundred steps; that the skill then carries over into
the research episodes is not shown (agents/grpo/README.md, "Tried next": on the tiny model it did not).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["copy_pretrain"]


def copy_pretrain(
    model: Any,
    words: Sequence[int],
    *,
    steps: int,
    batch_size: int,
    length: int,
    learning_rate: float,
    seed: int,
    max_grad_norm: float = 1.0,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``steps`` AdamW steps on ``w1 … wn w1 … wn`` (``n = length`` ids drawn uniformly
    from ``words``), the loss on the repeat after its first id.

    Returns ``copy_pretrain/…`` metrics: first and last losses, the copy accuracy (greedy next id on the
    repeat) of the last 10 steps, and the time taken.
    """
    import torch

    if len(words) < 2 or length < 2:
        raise ValueError(f"copy pre-training needs at least 2 words and length >= 2, got {len(words)}, {length}")
    device = next(model.parameters()).device
    pool = torch.as_tensor(list(words), dtype=torch.long)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    accuracies: list[float] = []
    started = time.perf_counter()
    for step in range(steps):
        half = pool[torch.randint(len(pool), (batch_size, length), generator=gen)]
        ids = torch.cat([half, half], dim=1).to(device)
        logits = model(input_ids=ids).logits[:, length:-1]  # predictions of repeat ids 2..n
        labels = ids[:, length + 1 :]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
        accuracies.append(float((logits.argmax(-1) == labels).float().mean()))
        if progress is not None:
            progress(step, losses[-1])
    optimizer.zero_grad(set_to_none=True)
    tail = losses[-10:] or [0.0]
    acc = accuracies[-10:] or [0.0]
    return {
        "copy_pretrain/loss_first": losses[0] if losses else 0.0,
        "copy_pretrain/loss_last10": sum(tail) / len(tail),
        "copy_pretrain/accuracy_last10": sum(acc) / len(acc),
        "copy_pretrain/seconds": time.perf_counter() - started,
    }
