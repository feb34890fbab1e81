"""Supervised warm-start: imitate a scripted agent's successful episodes before RL.

A randomly initialised model almost never writes a well-formed tool call, so every rollout scores the same −1
and GRPO's group-normalised advantages are all zero: no signal. A few hundred supervised steps on episodes a
scripted agent played in the same environment teach the format (and, on the synthetic task, to copy a found
value into the answer), after which rewards within a group differ and RL has something to work with.

Demonstrations are tokenised turn by turn exactly like rollouts (:meth:`ChatFormat.episode_ids`), and the
loss is the cross-entropy on the policy's turns only (mask 1), never on the tool responses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .losses import aggregate, forward_logprobs, pad_batch

if TYPE_CHECKING:
    from drgym.agent import Agent
    from drgym.env import WebResearchEnv

    from .config import GRPOConfig
    from .rollout import ChatFormat

__all__ = [
    "Demonstration",
    "collect_demonstrations",
    "collect_teacher_passes",
    "pass_agent_kwargs",
    "supervised_warmstart",
    "teacher_passes",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Demonstration:
    """One tokenised episode of the demonstrating agent."""

    ids: list[int]
    mask: list[int]
    reward: float
    record_index: int


async def _play(env: WebResearchEnv, agent: Agent, record_index: int) -> tuple[list[dict[str, Any]], float]:
    observation, info = await env.areset(options={"index": record_index})
    agent.reset(observation, info)
    while True:
        action = await agent.aact(observation, info)
        observation, reward, terminated, truncated, info = await env.astep(action)
        if terminated or truncated:
            return info["messages"], float(reward)


async def collect_demonstrations(
    envs: Sequence[WebResearchEnv],
    make_agent: Callable[[], Agent],
    record_indices: Sequence[int],
    fmt: ChatFormat,
    *,
    min_reward: float,
    max_seq_length: int,
    end_with_eos: bool = False,
) -> tuple[list[Demonstration], dict[str, float]]:
    """Play one episode per record with fresh agents (``len(envs)`` at a time) and keep the good ones.

    An episode is kept when its reward is at least ``min_reward`` and it fits ``max_seq_length`` tokens; an
    episode that raises is logged and dropped. ``end_with_eos`` adds the tokenizer's EOS after the last policy
    turn, as a policy token (``warmstart_eos_after_answer``).

    Returns:
        The demonstrations and ``warmstart/…`` metrics (episodes played, kept, their mean reward).
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in record_indices:
        queue.put_nowait(index)
    played: list[tuple[int, list[dict[str, Any]], float]] = []
    failures = 0

    async def worker(env: WebResearchEnv) -> None:
        nonlocal failures
        while not queue.empty():
            index = queue.get_nowait()
            try:
                messages, reward = await _play(env, make_agent(), index)
            except Exception as exc:  # noqa: BLE001  # one broken episode does not stop the collection
                failures += 1
                logger.warning(
                    "warm-start episode of record %d failed: %s: %s", index, type(exc).__name__, exc
                )
                continue
            played.append((index, messages, reward))

    await asyncio.gather(*(worker(env) for env in envs))
    played.sort(key=lambda item: item[0])
    demos = []
    for index, messages, reward in played:
        if reward < min_reward:
            continue
        ids, mask = fmt.episode_ids(fmt.messages(messages))
        if end_with_eos and messages[-1]["role"] == "assistant" and isinstance(fmt.tokenizer.eos_token_id, int):
            ids, mask = ids + [fmt.tokenizer.eos_token_id], mask + [1]
        if len(ids) <= max_seq_length and any(mask):
            demos.append(Demonstration(ids, mask, reward, index))
    rewards = [r for _, _, r in played]
    metrics = {
        "warmstart/episodes": float(len(played)),
        "warmstart/failed_episodes": float(failures),
        "warmstart/agent_reward_mean": sum(rewards) / len(rewards) if rewards else 0.0,
        "warmstart/demonstrations": float(len(demos)),
    }
    return demos, metrics


def teacher_passes(order: Sequence[int], episodes: int) -> list[list[int]]:
    """The record indices each teacher pass plays: ``episodes`` in all, taken from ``order`` again and again.

    With more episodes than questions every question is played several times, one pass per repeat; each pass
    gets its own agent seed (:func:`pass_agent_kwargs`), so a stochastic teacher's mistakes differ between
    the repeats and the warm-start learns the teacher's spread of answers to a question, not one arbitrary
    draw of it (a policy that imitates one draw per question is confident where the teacher was not, and
    GRPO then samples one answer per question and gets equal rewards in its group).
    """
    if not order or episodes < 1:
        return []
    full, rest = divmod(episodes, len(order))
    return [list(order) for _ in range(full)] + ([list(order[:rest])] if rest else [])


def pass_agent_kwargs(agent_cls: type, kwargs: dict[str, Any], index: int) -> dict[str, Any]:
    """The warm-start agent's arguments for teacher pass ``index``: the first pass's are ``kwargs`` as given,
    a later pass's ``seed`` is moved on by ``index`` (when the agent takes a ``seed``; else the same)."""
    if index == 0:
        return dict(kwargs)
    parameters = inspect.signature(agent_cls).parameters
    if "seed" not in parameters:
        logger.warning("%s takes no seed: its repeated warm-start passes replay the same choices", agent_cls.__name__)
        return dict(kwargs)
    base = kwargs.get("seed", parameters["seed"].default)
    return {**kwargs, "seed": (base if isinstance(base, int) else 0) + index}


async def collect_teacher_passes(
    envs: Sequence[WebResearchEnv],
    agent_cls: type,
    agent_kwargs: dict[str, Any],
    passes: Sequence[Sequence[int]],
    fmt: ChatFormat,
    **collect: Any,
) -> tuple[list[Demonstration], dict[str, float]]:
    """:func:`collect_demonstrations` once per teacher pass (:func:`teacher_passes`), each with its own agent
    arguments (:func:`pass_agent_kwargs`); ``collect`` are its keyword arguments. The metrics are over all
    passes: episodes, failures and demonstrations summed, the agent's reward averaged over every episode."""
    demos: list[Demonstration] = []
    episodes = failed = kept = reward_sum = 0.0
    for index, indices in enumerate(passes):
        kwargs = pass_agent_kwargs(agent_cls, agent_kwargs, index)
        got, metrics = await collect_demonstrations(envs, lambda kwargs=kwargs: agent_cls(**kwargs), indices, fmt, **collect)
        demos += got
        episodes += metrics["warmstart/episodes"]
        failed += metrics["warmstart/failed_episodes"]
        kept += metrics["warmstart/demonstrations"]
        reward_sum += metrics["warmstart/agent_reward_mean"] * metrics["warmstart/episodes"]
    return demos, {
        "warmstart/episodes": episodes,
        "warmstart/failed_episodes": failed,
        "warmstart/agent_reward_mean": reward_sum / episodes if episodes else 0.0,
        "warmstart/demonstrations": kept,
    }


def _token_weights(policy_mask: Any, attention_mask: Any, env_weight: float) -> Any:
    """Loss weight per token: 1 on the policy's tokens, ``env_weight`` on the env's tokens after the first
    policy token (tool responses and turn markers), 0 on the prompt and on padding."""
    import torch

    if not env_weight:
        return policy_mask
    started = torch.cumsum(policy_mask, dim=1) > 0
    env = started & (policy_mask == 0) & attention_mask.bool()
    return policy_mask + env_weight * env.to(policy_mask.dtype)


def supervised_warmstart(
    model: Any,
    demos: Sequence[Demonstration],
    cfg: GRPOConfig,
    *,
    pad_token_id: int,
    autocast: Callable[[], Any],
    progress: Callable[[int, float], None] | None = None,
    transform: Callable[[list[int]], list[int]] | None = None,
) -> dict[str, float]:
    """Cross-entropy on the demonstrations' policy tokens for ``cfg.warmstart_steps`` steps (AdamW).

    Batches of ``cfg.warmstart_batch_size`` are drawn in a seeded order (one shuffle per pass); each drawn
    demonstration's ids pass through ``transform`` first when given (e.g. :class:`~.renaming.EntityRenamer`,
    a fresh renaming every time it is drawn). Returns ``warmstart/…`` metrics: the loss of the first and last
    steps and the time taken.
    """
    import torch

    if not demos:
        raise ValueError(
            "no demonstrations to learn from: the warm-start agent reached warmstart_min_reward on no "
            "episode; lower warmstart_min_reward or raise warmstart_episodes"
        )
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmstart_learning_rate, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    order: list[int] = []
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(cfg.warmstart_steps):
        batch = []
        while len(batch) < min(cfg.warmstart_batch_size, len(demos)):
            if not order:
                order = torch.randperm(len(demos), generator=gen).tolist()
            batch.append(demos[order.pop()])
        seqs = [transform(list(d.ids)) if transform is not None else d.ids for d in batch]
        ids, attn, tmask = pad_batch(seqs, [d.mask for d in batch], pad_token_id, device)
        weights = _token_weights(tmask, attn, cfg.warmstart_env_loss_weight)
        with autocast():
            logprobs, _, first = forward_logprobs(model, ids, attn, weights)
        loss = -aggregate(logprobs, weights[:, first:], "dapo")  # weighted mean over the trained tokens
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    optimizer.zero_grad(set_to_none=True)
    tail = losses[-10:] or [0.0]
    return {
        "warmstart/loss_first": losses[0] if losses else 0.0,
        "warmstart/loss_last10": sum(tail) / len(tail),
        "warmstart/seconds": time.perf_counter() - started,
    }
