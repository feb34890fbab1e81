"""GRPO training of an LLM research policy inside ``drgym/WebResearch-v0`` (DeepResearcher's recipe).

Run ``python -m agents.grpo.train --config agents/grpo/configs/tiny-cpu.yaml`` (any setting can be overridden,
e.g. ``--max_steps 5``; ``--resume`` continues from the newest checkpoint of ``output_dir``).

Each step, top to bottom:

1. **rollout**: ``prompts_per_step`` questions × ``num_generations`` full episodes, played concurrently
   (:func:`agents.grpo.rollout.collect_rollouts`); each keeps the exact ids the policy sampled.
2. **advantages**: rewards normalised within each question's group, ``(r - mean) / (std + eps)``.
3. **update**: the clipped surrogate + ``beta`` × k3 KL to the frozen reference − ``entropy_coef`` × entropy,
   over policy tokens only, micro-batched with gradient accumulation, clipped, AdamW.
4. **log, evaluate, checkpoint**.

Old log-probs: with ``num_iterations: 1`` and one optimizer step per rollout batch (the paper), the policy
being optimised *is* the one that produced the batch, so the old log-probs are the current ones detached and
the ratio is exactly 1 (no extra forward pass). Otherwise (``old_logprobs: recompute``) they are recomputed
with the policy before the first update, so that the ratio compares two passes of the same numerics, not the
sampler's with the trainer's; ``old_logprobs: sampling`` uses the sampler's instead. The mean gap between the
sampler's and the trainer's log-probs is logged as ``rollout/logprob_gap``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drgym.errors import ConfigError, DrgymError

from .checkpoint import (
    build_model,
    check_architecture,
    latest_checkpoint,
    load_model,
    load_trainer_state,
    resolve_device,
    save_checkpoint,
    save_model,
)
from .config import GRPOConfig
from .losses import forward_logprobs, group_advantages, grpo_loss, pad_batch
from .metrics import MetricsLogger, plot_curves, rollout_metrics
from .rollout import (
    ChatFormat,
    HFGenerator,
    Rollout,
    Task,
    VLLMGenerator,
    build_task,
    collect_rollouts,
    make_envs,
)

__all__ = [
    "Run",
    "TrainingError",
    "atrain",
    "data_indices",
    "evaluate",
    "main",
    "setup",
    "train",
    "update_policy",
]

logger = logging.getLogger(__name__)


class TrainingError(DrgymError):
    """Training cannot go on (repeated NaN/inf losses, out of memory); the message says what to change."""


# ------------------------------------------------------------------------------------------------ state


@dataclass
class Run:
    """Everything one training run holds."""

    cfg: GRPOConfig
    device: Any
    model: Any
    tokenizer: Any
    fmt: ChatFormat
    optimizer: Any
    scheduler: Any
    generator: Any
    task: Task
    envs: list[Any]
    ref_model: Any = None
    step: int = 0
    nonfinite_in_a_row: int = 0
    autocast_dtype: Any = None
    metrics: MetricsLogger | None = None

    def autocast(self) -> Any:
        """The autocast context of forward passes (a no-op unless ``bf16``)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def data_indices(pool: Sequence[int], per_step: int, step: int, seed: int) -> list[int]:
    """The questions of ``step``: consecutive slices of a seeded permutation of ``pool``, new each pass.

    A pure function of its arguments, so a resumed run poses exactly the questions the original would have.
    """
    out: list[int] = []
    position = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(position, len(pool))
        perm = np.random.default_rng([seed, 29, epoch]).permutation(len(pool))
        take = min(per_step - len(out), len(pool) - offset)
        out += [pool[i] for i in perm[offset : offset + take]]
        position += take
    return out


# ------------------------------------------------------------------------------------------------ setup


def _scheduler(cfg: GRPOConfig, optimizer: Any) -> Any:
    import torch

    total = max(1, cfg.max_steps * cfg.num_iterations * _optimizer_steps_per_batch(cfg))

    def factor(n: int) -> float:
        if n < cfg.warmup_steps:
            return (n + 1) / (cfg.warmup_steps + 1)
        progress = min(1.0, (n - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        if cfg.lr_scheduler_type == "linear":
            return 1.0 - progress
        if cfg.lr_scheduler_type == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer_steps_per_batch(cfg: GRPOConfig) -> int:
    if cfg.gradient_accumulation_steps is None:
        return 1
    return cfg.rollout_batch_size // (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps)


def _autocast_dtype(cfg: GRPOConfig, device: Any) -> Any:
    import torch

    if not cfg.bf16:
        return None
    if device.type != "cuda" or not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"`bf16: true` needs a CUDA device with bfloat16 support, but the device is {device}; "
            "set bf16: false"
        )
    return torch.bfloat16


async def setup(cfg: GRPOConfig, *, resume: bool = False) -> Run:
    """Build the run: model (fresh, warm-started or from the newest checkpoint), reference, optimizer..."""
    import torch

    device = resolve_device(cfg.device)
    autocast_dtype = _autocast_dtype(cfg, device)
    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out)
    if resume and ckpt is None:
        raise ConfigError(f"--resume: there is no checkpoint in {out} to resume from")
    if not resume and ckpt is not None:
        raise ConfigError(
            f"output_dir {out} already holds checkpoints; pass --resume to continue that run, or "
            "choose another output_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    task = build_task(cfg)
    model, tokenizer = build_model(cfg, device, task.texts)
    if ckpt is not None:
        check_architecture(ckpt, model.config)
        model, tokenizer = load_model(ckpt, device, dtype=next(model.parameters()).dtype)
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    fmt = ChatFormat(tokenizer, chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
    envs = make_envs(task, max(cfg.rollout_batch_size, cfg.num_eval_questions))
    run = Run(cfg, device, model, tokenizer, fmt, None, None, None, task, envs, autocast_dtype=autocast_dtype)
    warm: dict[str, float] = {}
    if ckpt is None and cfg.warmstart_steps > 0:
        warm = await _warmstart(run)
        save_model(model, tokenizer, out / "warmstart")
    if cfg.beta > 0:
        run.ref_model = _reference(cfg, out, device, model, task.texts)
    run.optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
    )
    run.scheduler = _scheduler(cfg, run.optimizer)
    if ckpt is not None:
        state = load_trainer_state(ckpt, run.optimizer, run.scheduler)
        run.step, run.nonfinite_in_a_row = int(state["step"]), int(state.get("nonfinite_in_a_row", 0))
        _set_rng_state(state.get("rng") or {})
        logger.info("resumed from %s at step %d", ckpt, run.step)
    run.generator = _generator(run)
    tb = cfg.logging_dir or str(out / "tensorboard")
    run.metrics = MetricsLogger(
        out / "metrics.jsonl",
        tb if "tensorboard" in cfg.report_to else None,
        resume_step=run.step if ckpt is not None else None,
    )
    if warm:
        run.metrics.log(0, warm)
    return run


def _reference(cfg: GRPOConfig, out: Path, device: Any, policy: Any, texts: Sequence[str] = ()) -> Any:
    """The frozen reference: the policy RL starts from (after the warm-start, when there was one)."""
    if (out / "warmstart").is_dir():
        ref, _ = load_model(out / "warmstart", device, dtype=next(policy.parameters()).dtype)
    else:
        ref, _ = build_model(cfg, device, texts)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def _generator(run: Run) -> Any:
    cfg = run.cfg
    if cfg.generation_backend == "hf":
        return HFGenerator(
            run.model,
            run.tokenizer,
            stop=cfg.stop,
            batch_size=cfg.max_decode_batch,
            autocast_dtype=run.autocast_dtype,
        )
    init = save_model(run.model, run.tokenizer, Path(cfg.output_dir) / "vllm-init")
    engine = {
        "gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
        "max_model_len": cfg.max_seq_length,
        "dtype": str(next(run.model.parameters()).dtype).removeprefix("torch."),
        **cfg.vllm_kwargs,
    }
    generator = VLLMGenerator(
        str(init / "model"), str(init / "tokenizer"), stop=cfg.stop, seed=cfg.seed, **engine
    )
    generator.sync_weights(run.model)
    return generator


async def _warmstart(run: Run) -> dict[str, float]:
    from tqdm.auto import tqdm

    from drgym.agent import make_agent

    from .warmstart import collect_demonstrations, supervised_warmstart

    cfg = run.cfg
    indices = data_indices(
        run.task.train_indices, min(cfg.warmstart_episodes, len(run.task.train_indices)), 0, cfg.seed + 1
    )
    demos, metrics = await collect_demonstrations(
        run.envs[:64],
        lambda: make_agent(cfg.warmstart_agent, **cfg.warmstart_agent_kwargs),
        indices,
        run.fmt,
        min_reward=cfg.warmstart_min_reward,
        max_seq_length=cfg.max_seq_length,
    )
    bar = tqdm(total=cfg.warmstart_steps, desc="warm-start", disable=not cfg.progress_bar, leave=False)

    def progress(_: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        metrics |= await asyncio.to_thread(
            supervised_warmstart,
            run.model,
            demos,
            cfg,
            pad_token_id=_pad_id(run.tokenizer),
            autocast=run.autocast,
            progress=progress,
        )
    finally:
        bar.close()
    return metrics


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else (tokenizer.eos_token_id or 0)


# ------------------------------------------------------------------------------------------------ update


@dataclass
class _Item:
    ids: list[int]
    mask: list[int]
    advantage: float
    sampling: list[float]
    old: Any = None
    ref: Any = None


def _items(rollouts: Sequence[Rollout], advantages: Sequence[float]) -> list[_Item]:
    """Sequences with a policy token, with their masks and sampler log-probs aligned to token positions."""
    items = []
    for r, adv in zip(rollouts, advantages):
        if r.policy_tokens == 0:
            continue  # nothing sampled (the episode failed before its first turn): no gradient to give
        pad = [0] * len(r.prompt_ids)
        items.append(_Item(r.input_ids, pad + r.mask, adv, [0.0] * len(pad) + r.sampling_logprobs))
    return items


def _stack(values: Sequence[Sequence[float]], width: int, first: int, device: Any) -> Any:
    import torch

    out = torch.zeros((len(values), width), dtype=torch.float32)
    for b, row in enumerate(values):
        out[b, : len(row)] = torch.as_tensor(row, dtype=torch.float32)
    return out[:, first:].to(device)


def _score(run: Run, model: Any, items: Sequence[_Item]) -> list[Any]:
    """Per-item log-probs (aligned to token positions, on the CPU) of ``model``, without gradient."""
    import torch

    out = []
    size = run.cfg.per_device_train_batch_size
    with torch.no_grad():
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            ids, attn, tmask = pad_batch(
                [i.ids for i in chunk], [i.mask for i in chunk], _pad_id(run.tokenizer), run.device
            )
            with run.autocast():
                logp, _, first = forward_logprobs(model, ids, attn, tmask, temperature=run.cfg.temperature)
            for b, item in enumerate(chunk):
                row = torch.zeros(len(item.ids))
                row[first:] = logp[b, : len(item.ids) - first].float().cpu()
                out.append(row)
    return out


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def update_policy(run: Run, rollouts: Sequence[Rollout]) -> dict[str, float]:
    """One GRPO update on a rollout batch (``num_iterations`` passes); returns ``losses/…`` metrics.

    A non-finite loss or gradient skips that optimizer step (counted in ``losses/skipped_steps``); after
    ``max_nonfinite_steps`` such steps in a row it raises :class:`TrainingError`. Out of memory raises
    :class:`TrainingError` naming the settings to lower.
    """
    import torch

    cfg = run.cfg
    rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
    advantages = group_advantages(rewards, cfg.num_generations, cfg.advantage_epsilon).tolist()
    items = _items(rollouts, advantages)
    stats: dict[str, float] = {"losses/skipped_steps": 0.0, "losses/optimizer_steps": 0.0}
    if not items:
        return stats
    per_opt = (
        len(items)
        if cfg.gradient_accumulation_steps is None
        else cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    )
    many_steps = cfg.num_iterations > 1 or per_opt < len(items)
    if cfg.old_logprobs == "sampling":
        for item in items:
            item.old = torch.tensor(item.sampling)
    elif many_steps:
        for item, row in zip(items, _score(run, run.model, items)):
            item.old = row
    if run.ref_model is not None:
        for item, row in zip(items, _score(run, run.ref_model, items)):
            item.ref = row
    run.model.train()
    sums: dict[str, float] = {}
    for iteration in range(cfg.num_iterations):
        order = list(range(len(items)))
        if many_steps:
            order = torch.randperm(
                len(items),
                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + run.step * 101 + iteration),
            ).tolist()
        for start in range(0, len(order), per_opt):
            chunk = [items[i] for i in order[start : start + per_opt]]
            _optimizer_step(run, chunk, stats, sums, first_pass=iteration == 0)
    tokens = max(sums.pop("_tokens", 0.0), 1.0)
    for key, value in sums.items():
        stats[key] = value / tokens
    return stats


def _optimizer_step(
    run: Run, chunk: list[_Item], stats: dict[str, float], sums: dict[str, float], *, first_pass: bool
) -> None:
    import torch

    cfg = run.cfg
    size = cfg.per_device_train_batch_size
    scale = {"num_items": float(sum(sum(i.mask) for i in chunk)), "num_micro_batches": -(-len(chunk) // size)}
    run.optimizer.zero_grad(set_to_none=True)
    finite = True
    for start in range(0, len(chunk), size):
        micro = chunk[start : start + size]
        try:
            terms, n_tokens, gap = _micro_batch(run, micro, scale)
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc):
                raise
            width = max(len(i.ids) for i in micro)
            raise TrainingError(
                f"out of memory on a micro-batch of {len(micro)} episodes x {width} tokens; lower "
                f"per_device_train_batch_size (now {size}), max_seq_length ({cfg.max_seq_length}) or "
                "max_completion_length, or set gradient_checkpointing: true"
            ) from exc
        if terms is None:
            finite = False
            break
        for key, value in (
            ("losses/policy_loss", terms.policy_loss),
            ("losses/kl", terms.kl),
            ("losses/entropy", terms.entropy),
            ("losses/clip_fraction", terms.clip_fraction),
            ("losses/approx_kl_old", terms.approx_kl_old),
        ):
            sums[key] = sums.get(key, 0.0) + float(value) * n_tokens
        if first_pass and gap is not None:
            sums["rollout/logprob_gap"] = sums.get("rollout/logprob_gap", 0.0) + gap * n_tokens
        sums["_tokens"] = sums.get("_tokens", 0.0) + n_tokens
    if finite:
        limit = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), limit))
        finite = math.isfinite(grad_norm)
    if not finite:
        run.optimizer.zero_grad(set_to_none=True)
        stats["losses/skipped_steps"] += 1
        run.nonfinite_in_a_row += 1
        logger.warning(
            "step %d: non-finite loss or gradient, optimizer step skipped (%d in a row)",
            run.step,
            run.nonfinite_in_a_row,
        )
        if run.nonfinite_in_a_row >= cfg.max_nonfinite_steps:
            raise TrainingError(
                f"{run.nonfinite_in_a_row} optimizer steps in a row had a NaN/inf loss or gradient; lower "
                f"learning_rate (now {cfg.learning_rate}), check the rewards for NaN, or raise "
                "max_nonfinite_steps"
            )
        return
    run.optimizer.step()
    run.scheduler.step()
    run.nonfinite_in_a_row = 0
    stats["losses/optimizer_steps"] += 1
    stats["losses/grad_norm"] = grad_norm


def _micro_batch(run: Run, micro: list[_Item], scale: dict[str, Any]) -> tuple[Any, float, float | None]:
    """Forward and backward of one micro-batch; ``(None, 0, None)`` when its loss is not finite.

    ``scale`` holds what ``loss_type`` normalises by (:func:`agents.grpo.losses.aggregate`): the policy tokens
    and the micro-batches of the whole optimizer step."""
    import torch

    cfg = run.cfg
    ids, attn, tmask = pad_batch(
        [i.ids for i in micro], [i.mask for i in micro], _pad_id(run.tokenizer), run.device
    )
    with run.autocast():
        logp, entropy, first = forward_logprobs(
            run.model, ids, attn, tmask, temperature=cfg.temperature, with_entropy=True
        )
    mask = tmask[:, first:]
    width = ids.shape[1]
    old = logp.detach() if micro[0].old is None else _stack([i.old for i in micro], width, first, run.device)
    ref = None if micro[0].ref is None else _stack([i.ref for i in micro], width, first, run.device)
    advantages = torch.tensor([i.advantage for i in micro], dtype=torch.float32, device=run.device)
    terms = grpo_loss(
        logp,
        old,
        advantages,
        mask,
        epsilon=cfg.epsilon,
        ref_logprobs=ref,
        beta=cfg.beta,
        entropy=entropy,
        entropy_coef=cfg.entropy_coef,
        loss_type=cfg.loss_type,
        max_completion_length=cfg.max_completion_length,
        **scale,
    )
    if not torch.isfinite(terms.loss):
        return None, 0.0, None
    terms.loss.backward()
    n_tokens = float(mask.sum())
    sampling = _stack([i.sampling for i in micro], width, first, run.device)
    gap = float(((logp.detach() - sampling).abs() * mask).sum() / mask.sum().clamp(min=1.0))
    return terms, n_tokens, gap


# ------------------------------------------------------------------------------------------------ loop


async def _train_step(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    started = time.perf_counter()
    indices = data_indices(run.task.train_indices, cfg.prompts_per_step, run.step, cfg.seed)
    try:
        rollouts = await collect_rollouts(
            run.envs,
            run.generator,
            run.fmt,
            run.task.records,
            indices,
            cfg,
            step=run.step,
            group_size=cfg.num_generations,
        )
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        raise TrainingError(
            f"out of memory while generating; lower max_decode_batch (now "
            f"{cfg.max_decode_batch}) or max_seq_length"
        ) from exc
    rolled = time.perf_counter()
    metrics: dict[str, Any] = rollout_metrics(rollouts)
    metrics |= await asyncio.to_thread(update_policy, run, rollouts)
    if isinstance(run.generator, VLLMGenerator):
        run.generator.sync_weights(run.model)
    done = time.perf_counter()
    generated = sum(r.policy_tokens for r in rollouts)
    trained = sum(len(r.input_ids) for r in rollouts if r.policy_tokens) * cfg.num_iterations
    metrics |= {
        "charts/learning_rate": run.scheduler.get_last_lr()[0],
        "charts/rollout_seconds": rolled - started,
        "charts/update_seconds": done - rolled,
        "charts/episodes_per_second": len(rollouts) / max(rolled - started, 1e-9),
        "charts/rollout_tokens_per_second": generated / max(rolled - started, 1e-9),
        "charts/update_tokens_per_second": trained / max(done - rolled, 1e-9),
        "charts/zero_std_groups": _zero_std_fraction(rollouts, cfg.num_generations),
    }
    return metrics


def _zero_std_fraction(rollouts: Sequence[Rollout], group: int) -> float:
    """Fraction of groups whose rewards are all equal (they carry no learning signal)."""
    groups = [rollouts[i : i + group] for i in range(0, len(rollouts), group)]
    return sum(1.0 for g in groups if len({r.reward for r in g}) == 1) / max(1, len(groups))


async def evaluate(run: Run) -> dict[str, float]:
    """Greedy episodes on the held-out questions (``eval/…`` metrics); empty without held-out questions."""
    if not run.task.eval_indices:
        return {}
    rollouts = await collect_rollouts(
        run.envs,
        run.generator,
        run.fmt,
        run.task.records,
        run.task.eval_indices,
        run.cfg,
        step=run.step,
        group_size=1,
        temperature=0.0,
        salt=1,
    )
    return rollout_metrics(rollouts, "eval")


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNGs a checkpoint saved (drgym itself only draws from seeded private generators; a
    model with dropout draws from torch's, and continues as it would have)."""
    import torch

    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run: Run) -> Path:
    """Checkpoint the run at its current step."""
    cfg = run.cfg
    state = {
        "step": run.step,
        "data_position": run.step * cfg.prompts_per_step,
        "nonfinite_in_a_row": run.nonfinite_in_a_row,
        "rng": _rng_state(),
    }
    return save_checkpoint(
        cfg.output_dir,
        run.step,
        model=run.model,
        tokenizer=run.tokenizer,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        state=state,
        cfg=cfg,
        keep=cfg.save_total_limit,
    )


async def atrain(cfg: GRPOConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train on the caller's event loop; returns a summary (first/last rewards, paths)."""
    from tqdm.auto import tqdm

    run = await setup(cfg, resume=resume)
    assert run.metrics is not None
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="grpo", disable=not cfg.progress_bar)
    last: Path | None = None
    try:
        if run.step == 0 and run.task.eval_indices:
            run.metrics.log(0, await evaluate(run))
        while run.step < cfg.max_steps:
            metrics = await _train_step(run)
            run.step += 1
            finishing = run.step == cfg.max_steps
            if run.task.eval_indices and (finishing or (cfg.eval_steps and run.step % cfg.eval_steps == 0)):
                metrics |= await evaluate(run)
            run.metrics.log(run.step, metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}", f1=f"{metrics['rollout/f1']:.3f}")
            if finishing or run.step % cfg.save_steps == 0:
                last = await asyncio.to_thread(save, run)
    finally:
        bar.close()
        run.metrics.close()
    plot = plot_curves(run.metrics.path, Path(cfg.output_dir) / "curves.png") if cfg.plot else None
    return _summary(run, last, plot)


def _summary(run: Run, checkpoint: Path | None, plot: Path | None) -> dict[str, Any]:
    from .metrics import read_metrics

    rows = read_metrics(run.metrics.path) if run.metrics else []
    train_rows = [r for r in rows if "rollout/reward_mean" in r]
    eval_rows = [r for r in rows if "eval/f1" in r]
    out: dict[str, Any] = {
        "steps": run.step,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "plot": str(plot) if plot else None,
        "metrics": str(run.metrics.path),
    }
    for name, table in (("train", train_rows), ("eval", eval_rows)):
        prefix = "rollout" if name == "train" else "eval"
        if table:
            for key in ("reward_mean", "f1"):
                out[f"{name}_{key}_first"] = table[0].get(f"{prefix}/{key}")
                out[f"{name}_{key}_last"] = table[-1].get(f"{prefix}/{key}")
    return out


def train(cfg: GRPOConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (see the module docstring); ``resume`` continues from the newest checkpoint of ``output_dir``."""
    return asyncio.run(atrain(cfg, resume=resume))


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """``--config``, ``--resume`` and one ``--<setting>`` per config field (help from the field)."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.grpo.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML file of settings (flags below override it)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint of output_dir"
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level of the run")
    group = parser.add_argument_group("settings (YAML syntax for values: 3, 1e-6, null, [a, b], {k: v})")
    for f in dataclasses.fields(GRPOConfig):
        group.add_argument(
            f"--{f.name}",
            default=argparse.SUPPRESS,
            type=_yaml_value,
            metavar="VALUE",
            help=f.metadata["help"],
        )
    return parser


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the summary as JSON."""
    import json

    args = build_parser().parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import bm25s  # noqa: F401  # it sets its own logger to DEBUG when imported: import it, then level it

    logging.getLogger("bm25s").setLevel(level)
    overrides = {k: v for k, v in vars(args).items() if k in GRPOConfig.field_names()}
    for key in ("system_prompt", "chat_template", "output_dir", "model_name_or_path", "dataset"):
        if key in overrides and overrides[key] is not None and not isinstance(overrides[key], str):
            overrides[key] = str(overrides[key])
    try:
        cfg = (
            GRPOConfig.from_yaml(args.config, **overrides)
            if args.config
            else GRPOConfig.from_dict(overrides, where="the command line")
        )
        summary = train(cfg, resume=args.resume)
    except DrgymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
