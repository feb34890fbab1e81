"""Rollouts: many multi-turn episodes of ``WebResearch-v0`` played at once, kept as the exact ids sampled.

A step plays ``num_generations`` episodes of each of its questions concurrently on one event loop. Turn by
turn, the next turns of all live episodes are generated together (one batched decode, in a worker thread),
then every env runs its tool call concurrently, and each tool result is appended to its episode as the token
ids of the chat template's tool turn. The sequence of an episode is therefore built incrementally:

    prompt ids (template of system + user, with the generation prompt)                 mask 0
    + sampled ids of turn 1                                                            mask 1
    + ids of the tool turn, e.g. (Qwen2.5 renders a tool turn as a user turn)          mask 0
      "<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n"
      "<|im_start|>assistant\\n"
    + sampled ids of turn 2 ...                                                        mask 1

and is never re-tokenised: the ids the loss is computed on are the ids the policy sampled, and the mask is 1
exactly on them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from drgym.errors import ConfigError, missing_dependency
from drgym.llm.token_turns import ChatFormat, Generator, HFGenerator, Sample, failure_reward, sample_seed
from drgym.reward import score_episode

if TYPE_CHECKING:
    from drgym.data.records import QARecord
    from drgym.env import WebResearchEnv

    from .config import GRPOConfig

__all__ = [
    "ChatFormat",
    "Generator",
    "HFGenerator",
    "Rollout",
    "Sample",
    "Task",
    "VLLMGenerator",
    "build_task",
    "collect_rollouts",
    "failure_reward",
    "make_envs",
    "sample_seed",
]

logger = logging.getLogger(__name__)

class VLLMGenerator:
    """Sampling with an in-process vLLM engine on GPU; the trainer pushes its weights after each update.

    The engine is given token ids (``prompt_token_ids``) so nothing is re-tokenised. Its logprobs follow the
    engine's ``logprobs_mode``; the default ``old_logprobs: recompute`` does not use them.

    Args:
        model_path: A directory or hub name vLLM loads the architecture (and first weights) from.
        tokenizer_path: Where the tokenizer is (the trainer saves it beside the weights).
        stop: Stop strings, kept in the output.
        seed: Engine seed.
        **engine_kwargs: ``gpu_memory_utilization``, ``max_model_len``, ``dtype`` ... for ``vllm.LLM``.
    """

    def __init__(
        self,
        model_path: str,
        tokenizer_path: str,
        *,
        stop: Sequence[str],
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the model in this process
        try:
            import vllm
        except ImportError as exc:
            raise missing_dependency("vllm", "vllm") from exc
        self._vllm = vllm
        self.stop = list(stop)
        self.llm = vllm.LLM(model=model_path, tokenizer=tokenizer_path, seed=seed, **engine_kwargs)

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
        params = [
            self._vllm.SamplingParams(
                temperature=temperature,
                top_p=top_p,
                top_k=top_k if top_k > 0 else -1,
                max_tokens=b,
                stop=self.stop,
                include_stop_str_in_output=True,
                logprobs=0,
                seed=int(s),
            )
            for b, s in zip(budgets, seeds)
        ]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        samples = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = [
                float(step[tok].logprob) if step and tok in step else 0.0
                for step, tok in zip(c.logprobs or [], ids)
            ]
            samples.append(Sample(ids, lps, c.text, "length" if c.finish_reason == "length" else "stop"))
        return samples

    def sync_weights(self, model: Any) -> None:
        """Copy the trainer's weights into the engine (same process, same GPU)."""
        engine = self.llm.llm_engine
        for path in (
            "model_executor.driver_worker.model_runner.model",
            "model_executor.driver_worker.worker.model_runner.model",
        ):
            target: Any = engine
            try:
                for part in path.split("."):
                    target = getattr(target, part)
            except AttributeError:
                continue
            target.load_weights(((name, p.detach()) for name, p in model.state_dict().items()))
            if hasattr(self.llm, "reset_prefix_cache"):
                self.llm.reset_prefix_cache()
            return
        raise ConfigError(
            "cannot reach the vLLM engine's model to update its weights (this vLLM version keeps it in "
            "another "
            "process); use generation_backend: hf, or a vLLM version with in-process V1 workers"
        )


# ---------------------------------------------------------------------------------------------- episodes


@dataclass
class Rollout:
    """One episode as token ids: ``prompt_ids`` then ``completion_ids`` (sampled turns and tool turns)."""

    group: int
    """Position of the question in the step: rollouts of one group share a question."""
    record_index: int
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    """1 on every token the policy sampled, 0 on tool turns; aligned with ``completion_ids``."""
    sampling_logprobs: list[float] = field(default_factory=list)
    """The sampler's logprob of each completion token (0 on tool turns)."""
    turns: list[str] = field(default_factory=list)
    reward: float = 0.0
    f1: float = 0.0
    em: float = 0.0
    format_ok: bool = False
    answered: bool = False
    truncated: bool = False
    context_overflow: bool = False
    tool_calls: int = 0
    error: str | None = None

    @property
    def input_ids(self) -> list[int]:
        """The whole sequence the loss is computed on."""
        return self.prompt_ids + self.completion_ids

    @property
    def policy_tokens(self) -> int:
        """How many tokens the policy sampled in this episode."""
        return sum(self.mask)


@dataclass
class _Live:
    rollout: Rollout
    env: WebResearchEnv
    answers: list[str]
    index: int


async def collect_rollouts(
    envs: Sequence[WebResearchEnv],
    generator: Generator,
    fmt: ChatFormat,
    records: Sequence[QARecord],
    record_indices: Sequence[int],
    cfg: GRPOConfig,
    *,
    step: int,
    group_size: int,
    temperature: float | None = None,
    salt: int = 0,
) -> list[Rollout]:
    """Play ``group_size`` episodes of each question in ``record_indices`` concurrently.

    Args:
        envs: At least ``len(record_indices) * group_size`` environments (reset here).
        generator: Generates the turns.
        fmt: Builds the token ids.
        records: The env's records (for the gold answers of episodes cut short).
        record_indices: The questions (indices into ``records``).
        cfg: Sampling and length settings.
        step: Seeds the sampling, with ``cfg.seed`` and ``salt``.
        group_size: Episodes per question.
        temperature: Overrides ``cfg.temperature`` (0: greedy, for evaluation).

    Returns:
        ``len(record_indices) * group_size`` rollouts, grouped by question. An episode that errors is logged
        and gets the format reward; the others go on.
    """
    if len(envs) < len(record_indices) * group_size:
        raise ConfigError(f"{len(envs)} envs for {len(record_indices) * group_size} episodes")
    temp = cfg.temperature if temperature is None else temperature
    rollouts: list[Rollout] = []
    live: list[_Live] = []
    for q, record_index in enumerate(record_indices):
        for _ in range(group_size):
            rollout = Rollout(group=q, record_index=record_index)
            env = envs[len(rollouts)]
            rollouts.append(rollout)
            started = await _start(env, rollout, fmt, cfg)
            if started:
                live.append(_Live(rollout, env, list(records[record_index].answers), len(rollouts) - 1))
    turn = 0
    while live:
        contexts = [s.rollout.input_ids for s in live]
        budgets = [min(cfg.max_completion_length, cfg.max_seq_length - len(c)) for c in contexts]
        seeds = [sample_seed(cfg.seed, salt, step, s.index, turn) for s in live]
        samples = await asyncio.to_thread(
            generator.generate,
            contexts,
            budgets,
            temperature=temp,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seeds=seeds,
        )
        results = await asyncio.gather(
            *(s.env.astep(x.text) for s, x in zip(live, samples)), return_exceptions=True
        )
        live = [s for s, x, r in zip(live, samples, results) if _advance(s, x, r, fmt, cfg)]
        turn += 1
    return rollouts


async def _start(env: WebResearchEnv, rollout: Rollout, fmt: ChatFormat, cfg: GRPOConfig) -> bool:
    try:
        _, info = await env.areset(options={"index": rollout.record_index})
        prompt = fmt.prompt_ids(info["messages"])
    except Exception as exc:  # noqa: BLE001  # a broken record or template fails this episode only
        _fail(rollout, f"reset failed: {type(exc).__name__}: {exc}", cfg)
        return False
    if len(prompt) > cfg.max_prompt_length:
        _fail(
            rollout,
            f"the prompt is {len(prompt)} tokens, over max_prompt_length={cfg.max_prompt_length}",
            cfg,
        )
        return False
    rollout.prompt_ids = prompt
    return True


def _fail(rollout: Rollout, why: str, cfg: GRPOConfig) -> None:
    logger.warning("episode of record %d failed: %s", rollout.record_index, why)
    rollout.error = why
    rollout.reward = failure_reward(cfg.reward_mode)


def _advance(state: _Live, sample: Sample, result: Any, fmt: ChatFormat, cfg: GRPOConfig) -> bool:
    """Record one turn and the env's answer; True while the episode goes on."""
    r = state.rollout
    r.completion_ids += sample.token_ids
    r.mask += [1] * len(sample.token_ids)
    r.sampling_logprobs += sample.logprobs
    r.turns.append(sample.text)
    if isinstance(result, BaseException):
        _fail(r, f"env step failed: {type(result).__name__}: {result}", cfg)
        return False
    _, _, terminated, truncated, info = result
    r.tool_calls = int(info.get("tool_calls", 0))
    if terminated or truncated:
        r.reward, r.f1, r.em = (
            float(info.get("reward", 0.0)),
            float(info.get("f1", 0.0)),
            float(info.get("em", 0.0)),
        )
        r.format_ok = bool((info.get("score") or {}).get("format_ok", False))
        r.answered = (info.get("action") or {}).get("kind") == "answer"
        r.truncated = truncated
        return False
    last = sample.token_ids[-1] if sample.token_ids else None
    tool_ids = fmt.tool_turn_ids(info["messages"][-1]["content"], last)
    if len(r.input_ids) + len(tool_ids) >= cfg.max_seq_length:  # no room left for another turn
        score = score_episode(r.turns, state.answers or ["-"], mode=cfg.reward_mode)
        r.reward, r.f1, r.em, r.format_ok = score.reward, score.f1, score.em, score.format_ok
        r.truncated = r.context_overflow = True
        return False
    r.completion_ids += tool_ids
    r.mask += [0] * len(tool_ids)
    r.sampling_logprobs += [0.0] * len(tool_ids)
    return True


# ------------------------------------------------------------------------------------------------ tasks


@dataclass
class Task:
    """The questions of a run, split into training and held-out ones, and how to build envs over them."""

    records: list[QARecord]
    train_indices: list[int]
    eval_indices: list[int]
    env_kwargs: dict[str, Any]
    texts: list[str] = field(default_factory=list)
    """The task's text (questions, answers, synthetic corpus passages): what a word tokenizer is trained on."""


def build_task(cfg: GRPOConfig) -> Task:
    """Load (or generate) the questions and pick the search backend of ``cfg``.

    The synthetic task generates ``num_train_questions + num_eval_questions`` questions with
    ``seed = cfg.seed`` and searches its own corpus with a local BM25 index held in memory.
    """
    env_kwargs: dict[str, Any] = {
        "max_turns": cfg.max_turns,
        "results_per_query": cfg.results_per_query,
        "reward_mode": cfg.reward_mode,
    }
    n_eval = cfg.num_eval_questions
    if cfg.dataset == "synthetic":
        from drgym.data.synthetic import make_synthetic_task
        from drgym.search.local import BM25Backend

        n_train = cfg.num_train_questions or 256
        kinds = tuple(cfg.synthetic_kinds) if cfg.synthetic_kinds is not None else None
        records, passages = make_synthetic_task(
            n_train + n_eval,
            seed=cfg.seed,
            two_hop_fraction=cfg.two_hop_fraction,
            kinds=kinds,
            entities=cfg.synthetic_entities,
            neighbours=cfg.synthetic_neighbours,
            held_out=n_eval if cfg.synthetic_neighbours else 0,
        )
        env_kwargs["search"] = BM25Backend(passages, corpus="synthetic", cache=False)
        texts = [t for p in passages for t in (p.title, p.text)]
    else:
        from drgym.data import load_dataset

        records = load_dataset(cfg.dataset, data_source=cfg.data_source)
        texts = []
        n_train = min(cfg.num_train_questions or len(records) - n_eval, len(records) - n_eval)
        env_kwargs.update(search=cfg.search, corpus=cfg.corpus)
        if n_train < 1:
            raise ConfigError(
                f"dataset {cfg.dataset!r} has {len(records)} questions; num_eval_questions={n_eval} "
                "leaves none to train on"
            )
    order = np.random.default_rng([cfg.seed, 17]).permutation(len(records)).tolist()
    if cfg.dataset == "synthetic" and cfg.synthetic_neighbours:  # the held-out questions' ring: the last ones
        held = set(range(len(records) - n_eval, len(records)))
        order = sorted(held) + [i for i in order if i not in held]
    texts += [t for r in records for t in (r.question, *r.answers)]
    return Task(list(records), order[n_eval : n_eval + n_train], order[:n_eval], env_kwargs, texts)


def make_envs(task: Task, n: int, factory: Callable[..., Any] | None = None) -> list[WebResearchEnv]:
    """``n`` environments over the task's records, sharing one search backend."""
    import gymnasium

    import drgym  # noqa: F401  (registers the env id)

    make = factory or (lambda **kw: gymnasium.make("drgym/WebResearch-v0", **kw).unwrapped)
    return [make(dataset=task.records, **task.env_kwargs) for _ in range(n)]
