"""Whole drgym episodes played as one TRL rollout batch: token-in/token-out, many episodes on one event loop.

Turn by turn, the next turns of every live episode are sampled in one batched call (in a worker thread), then
every env runs its tool concurrently (``astep``), and each tool result is appended as the token ids of the chat
template's tool turn (:class:`agents.grpo.rollout.ChatFormat`), never re-tokenised::

    prompt_ids      template of the env's system + user messages, with the generation prompt
    completion_ids  sampled turn 1 (env_mask 1) + tool turn (env_mask 0) + sampled turn 2 (1) + ... [+ EOS (0)]

Budgets have TRL's meaning: ``max_completion_length`` bounds the whole completion (sampled and tool tokens),
and the context never exceeds the model's ``max_position_embeddings``. An episode that runs out of either ends
cut, scored by the env's rule for an episode without an answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drgym.llm.token_turns import ChatFormat, Generator, Sample, failure_reward, sample_seed
from drgym.reward import score_episode

if TYPE_CHECKING:
    from drgym.env import WebResearchEnv

__all__ = ["EpisodeTokens", "RolloutTimes", "TurnLimits", "VLLMTurnGenerator", "play_episodes"]

logger = logging.getLogger(__name__)


@dataclass
class EpisodeTokens:
    """One episode as TRL trains on it, with the env's verdict."""

    prompt_ids: list[int]
    answers: list[str]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    """1 on every id the policy sampled, 0 on tool-turn and template ids; aligned with ``completion_ids``."""
    logprobs: list[float] = field(default_factory=list)
    """The sampler's logprob of each sampled id (0.0 where ``env_mask`` is 0)."""
    turns: list[str] = field(default_factory=list)
    reward: float = 0.0
    f1: float = 0.0
    format_ok: bool = False
    tool_calls: int = 0
    cut: bool = False
    """Ended by the completion budget or the context window, not by the env."""
    error: str | None = None


@dataclass(frozen=True)
class TurnLimits:
    """Sampling settings and budgets of one rollout batch (read from the trainer's ``GRPOConfig``)."""

    max_completion_length: int
    max_context: int
    max_turn_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    seed: int
    reward_mode: str


@dataclass
class RolloutTimes:
    """Where the rollout time of the last batches went (seconds, summed over calls until ``reset``)."""

    generate_s: float = 0.0
    env_s: float = 0.0
    calls: int = 0
    episodes: int = 0

    def reset(self) -> None:
        self.generate_s = self.env_s = 0.0
        self.calls = self.episodes = 0


async def play_episodes(
    envs: Sequence[WebResearchEnv],
    options: Sequence[Mapping[str, Any]],
    answers: Sequence[Sequence[str]],
    generator: Generator,
    fmt: ChatFormat,
    limits: TurnLimits,
    *,
    salt: int,
    times: RolloutTimes,
) -> list[EpisodeTokens]:
    """Play one episode per ``options`` entry (``envs[i].reset(options=options[i])``), all at once.

    ``answers[i]`` are the gold answers of episode ``i`` (to score an episode cut short, as the env would).
    """
    episodes: list[EpisodeTokens] = []
    for env, opts, golds in zip(envs, options, answers):
        _, info = await env.areset(options=dict(opts))
        episodes.append(EpisodeTokens(fmt.prompt_ids(info["messages"]), list(golds)))
    live = [i for i, ep in enumerate(episodes) if not _out_of_room(ep, limits, 1)]
    for i in set(range(len(episodes))) - set(live):
        _cut(episodes[i], limits)
    turn = 0
    while live:
        contexts = [episodes[i].prompt_ids + episodes[i].completion_ids for i in live]
        budgets = [_room(episodes[i], limits) for i in live]
        started = time.perf_counter()
        samples = await asyncio.to_thread(
            generator.generate,
            contexts,
            budgets,
            temperature=limits.temperature,
            top_p=limits.top_p,
            top_k=limits.top_k,
            seeds=[sample_seed(limits.seed, salt, i, turn) for i in live],
        )
        stepped = time.perf_counter()
        results = await asyncio.gather(
            *(envs[i].astep(s.text) for i, s in zip(live, samples)), return_exceptions=True
        )
        times.generate_s += stepped - started
        times.env_s += time.perf_counter() - stepped
        live = [i for i, s, r in zip(live, samples, results) if _advance(episodes[i], s, r, fmt, limits)]
        turn += 1
    times.calls += 1
    times.episodes += len(episodes)
    return episodes


def _room(ep: EpisodeTokens, limits: TurnLimits) -> int:
    """Tokens the next turn may sample: what is left of the completion budget and of the context."""
    context = len(ep.prompt_ids) + len(ep.completion_ids)
    room = min(limits.max_completion_length - len(ep.completion_ids), limits.max_context - context)
    return room if limits.max_turn_tokens is None else min(room, limits.max_turn_tokens)


def _out_of_room(ep: EpisodeTokens, limits: TurnLimits, extra: int) -> bool:
    context = len(ep.prompt_ids) + len(ep.completion_ids)
    room = min(limits.max_completion_length - len(ep.completion_ids), limits.max_context - context)
    return room < extra


def _cut(ep: EpisodeTokens, limits: TurnLimits) -> None:
    """End an episode that ran out of room: the env's score of its turns, which hold no answer yet."""
    score = score_episode(ep.turns, ep.answers or ["-"], mode=limits.reward_mode)
    ep.reward, ep.f1, ep.format_ok, ep.cut = score.reward, score.f1, score.format_ok, True


def _advance(ep: EpisodeTokens, sample: Sample, result: Any, fmt: ChatFormat, limits: TurnLimits) -> bool:
    """Record one sampled turn and the env's answer to it; True while the episode goes on."""
    ep.completion_ids += sample.token_ids
    ep.env_mask += [1] * len(sample.token_ids)
    ep.logprobs += sample.logprobs
    ep.turns.append(sample.text)
    if isinstance(result, BaseException):  # an env bug (faults are observations): this episode only
        logger.warning("env step failed: %s: %s", type(result).__name__, result)
        ep.error = f"{type(result).__name__}: {result}"
        ep.reward = failure_reward(limits.reward_mode)
        return False
    _, reward, terminated, truncated, info = result
    ep.tool_calls = int(info.get("tool_calls", 0))
    if terminated or truncated:
        ep.reward, ep.f1 = float(reward), float(info.get("f1", 0.0))
        ep.format_ok = bool((info.get("score") or {}).get("format_ok", False))
        _close_turn(ep, fmt, sample)
        return False
    last = sample.token_ids[-1] if sample.token_ids else None
    tool_ids = fmt.tool_turn_ids(info["messages"][-1]["content"], last)
    if _out_of_room(ep, limits, len(tool_ids) + 1):  # no room for the tool turn and one more sampled id
        _cut(ep, limits)
        return False
    ep.completion_ids += tool_ids
    ep.env_mask += [0] * len(tool_ids)
    ep.logprobs += [0.0] * len(tool_ids)
    return True


def _close_turn(ep: EpisodeTokens, fmt: ChatFormat, sample: Sample) -> None:
    """End the last turn with the template's end-of-turn id (EOS, env_mask 0) when a stop string ended it,
    so TRL counts the episode as finished rather than clipped (``mask_truncated_completions``)."""
    eos = next(iter(fmt.eos_token_ids), None)
    if eos is None or (sample.token_ids and sample.token_ids[-1] in fmt.eos_token_ids):
        return
    if sample.finish_reason == "stop":
        ep.completion_ids.append(eos)
        ep.env_mask.append(0)
        ep.logprobs.append(0.0)


class VLLMTurnGenerator:
    """Turns sampled by the trainer's own vLLM engine (``trainer.vllm_generation``, server or colocate mode).

    Each turn is a single-completion request per episode (``num_generations=1``) from the episode's token ids;
    the reply is cut after the first stop string (``</tool_call>``, ``</answer>``) and at the row's budget, so
    the ids kept are a prefix of the ids vLLM sampled. Sampling settings are TRL's (``temperature``, ``top_p``,
    ``top_k`` of ``GRPOConfig``); per-request seeds are not passed (vLLM seeds itself).
    """

    def __init__(self, vllm_generation: Any, tokenizer: Any, stop: Sequence[str]) -> None:
        self.vllm = vllm_generation
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        eos = tokenizer.eos_token_id
        self.eos_token_ids = frozenset([eos] if isinstance(eos, int) else [])

    def generate(
        self,
        prompts: Sequence[list[int]],
        budgets: Sequence[int],
        *,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
        seeds: Sequence[int],
    ) -> list[Sample]:
        saved = self.vllm.max_completion_length
        self.vllm.max_completion_length = max(budgets)
        try:
            _, completion_ids, logprobs, logprob_ids = self.vllm.generate(
                prompts=[list(p) for p in prompts], images=None, num_generations=1
            )
        finally:
            self.vllm.max_completion_length = saved
        out = []
        for row, (ids, budget) in enumerate(zip(completion_ids, budgets)):
            ids = list(ids)[:budget]
            lps = [
                _sampled_logprob(tok, logprobs[row][t] if logprobs else None, logprob_ids[row][t] if logprob_ids else None)
                for t, tok in enumerate(ids)
            ]
            ids, stopped = self._cut_at_stop(ids)
            stopped = stopped or bool(ids and ids[-1] in self.eos_token_ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            out.append(Sample(ids, lps[: len(ids)], text, "stop" if stopped else "length"))
        return out

    def _cut_at_stop(self, ids: list[int]) -> tuple[list[int], bool]:
        """The shortest prefix of ``ids`` whose text holds a stop string (binary search: decoding is
        monotone in the prefix length), or all of ``ids``."""

        def has_stop(k: int) -> bool:
            text = self.tokenizer.decode(ids[:k], skip_special_tokens=True)
            return any(s in text for s in self.stop)

        if not self.stop or not has_stop(len(ids)):
            return ids, False
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if has_stop(mid):
                hi = mid
            else:
                lo = mid + 1
        return ids[:lo], True


def _sampled_logprob(token: int, logprobs: Any, token_ids: Any) -> float:
    """The logprob vLLM reports for the sampled ``token`` (its entries are sorted by rank, the sampled one
    included); NaN where vLLM has none."""
    if logprobs is None:
        return float("nan")
    if token_ids is not None and token in token_ids:
        value = logprobs[list(token_ids).index(token)]
    else:
        value = logprobs[0] if isinstance(logprobs, (list, tuple)) else logprobs
    return float("nan") if value is None else float(value)
