"""Copy pre-training: teach a model from scratch to copy from its context before it imitates anyone.

Every answer in the research task is a copy: the asked name into the query, a sentence of a search result
into the thought, its value into the answer. A randomly initialised model learns in-context copying only once
an attention head finds the earlier position to copy from *and* a value circuit maps a token back to itself;
each one's gradient is scaled by the other, so imitation alone sits on a plateau (the induction-head
plateau), and on a small task it never leaves it: memorising the training answers lowers the loss sooner.

This stage gives the skill a dense signal it cannot get by memorising: sequences of random words, then the
same words again, with the loss on the repeat (every repeated token is a copy target, and no word sequence
ever comes back). Two shapes:

- fixed (``min_length`` unset): every sequence is ``length`` words, so the repeat stands at one offset and a
  purely positional head solves it (the tiny model: accuracy 1.0 in 300 steps). A positional head does not
  find a value in a search result, whose offset changes from episode to episode.
- variable (``min_length`` set): each step draws the length in ``[min_length, length]`` and a lead-in of up
  to ``length // 2`` random words, so only matching content predicts the repeat: an induction head (a
  previous-token head, then a head attending to the token after the earlier occurrence of the current one).
  The tiny model sits at chance for 900–2,900 steps, depending on the seed, then learns it within ~200
  (agents/grpo/README.md, "Learning on a CPU").

Because that plateau's length is a matter of the seed, ``stop_accuracy`` ends the stage once the skill is
there (the mean greedy copy accuracy of the last 10 steps reaches it), so ``steps`` is a ceiling: a seed that
leaves the plateau early does not pay for the slowest one's steps.
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
    min_length: int | None = None,
    stop_accuracy: float | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``steps`` AdamW steps on ``w1 … wn w1 … wn`` (ids drawn uniformly from ``words``),
    the loss on the repeat after its first id. ``n = length``, or, with ``min_length``, drawn in
    ``[min_length, length]`` each step, after a lead-in of ``0 … length // 2`` random ids (see the module).

    Returns ``copy_pretrain/…`` metrics: first and last losses, the copy accuracy (greedy next id on the
    repeat) of the last 10 steps, the steps run and the time taken. With ``stop_accuracy``, the stage ends
    once that accuracy reaches it (after at least 10 steps).
    """
    import torch

    if len(words) < 2 or length < 2:
        raise ValueError(f"copy pre-training needs at least 2 words and length >= 2, got {len(words)}, {length}")
    if min_length is not None and not 2 <= min_length <= length:
        raise ValueError(f"copy pre-training's min_length must be in [2, length={length}], got {min_length}")
    if stop_accuracy is not None and not 0.0 < stop_accuracy <= 1.0:
        raise ValueError(f"copy pre-training's stop_accuracy must be in (0, 1], got {stop_accuracy}")
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
        ids, start = _copy_batch(pool, gen, batch_size, length, min_length)
        ids = ids.to(device)
        logits = model(input_ids=ids).logits[:, start:-1]  # predictions of repeat ids 2..n
        labels = ids[:, start + 1 :]
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
        if stop_accuracy is not None and len(accuracies) >= 10 and sum(accuracies[-10:]) / 10 >= stop_accuracy:
            break
    optimizer.zero_grad(set_to_none=True)
    tail = losses[-10:] or [0.0]
    acc = accuracies[-10:] or [0.0]
    return {
        "copy_pretrain/loss_first": losses[0] if losses else 0.0,
        "copy_pretrain/loss_last10": sum(tail) / len(tail),
        "copy_pretrain/accuracy_last10": sum(acc) / len(acc),
        "copy_pretrain/steps": float(len(losses)),
        "copy_pretrain/seconds": time.perf_counter() - started,
    }


def _copy_batch(pool: Any, gen: Any, batch_size: int, length: int, min_length: int | None) -> tuple[Any, int]:
    """One step's sequences ``lead-in + w1 … wn + w1 … wn`` and the index of the repeat's first id."""
    import torch

    n, lead = length, 0
    if min_length is not None:
        n = int(torch.randint(min_length, length + 1, (1,), generator=gen))
        lead = int(torch.randint(0, length // 2 + 1, (1,), generator=gen))
    drawn = pool[torch.randint(len(pool), (batch_size, lead + n), generator=gen)]
    return torch.cat([drawn, drawn[:, lead:]], dim=1), lead + n
