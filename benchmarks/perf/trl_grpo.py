"""GRPO step time: the bundled agent against TRL's ``GRPOTrainer`` with its own generation, and what TRL's tool
loop costs in waiting.

Part 1, one run, the same tiny model (``tiny-cpu.yaml``'s word-level Qwen2, the same initial
weights in every row) and batch shape (``--prompts`` questions x ``--generations`` episodes, at most
``--tokens`` new tokens per turn, ``beta`` 0), both on ``trl.GRPOTrainer``:

* ``bundled``: ``agents/grpo/train.py``'s trainer (``make_trainer``: ``GRPOTrainer`` with
  ``rollout_func=make_rollout_func(...)``, whole drgym episodes, plus drgym's metrics callback);
* ``trl-1turn``: ``trl.GRPOTrainer`` with its own single-turn generation (the question in, one completion
  out, scored with drgym's reward), the shape of a plain TRL GRPO run.

Each row is split into rollout (TRL: ``_generate_and_score_completions``, generation and scoring) and update
(the rest of TRL's ``step_time``), with the env's share of the step (wall time while any env was stepping).

Part 2, the tool wait: ``environment_factory`` (TRL awaits one sample's tool call before it starts the next
sample's: ``GRPOTrainer._tool_call_loop``) against ``rollout_func`` (every episode's tool call at once), both on
the real trainer with a scripted policy (search once, then answer: generation costs nearly nothing, so the
rollout time is the tools) and a search backend that answers after ``--latency`` seconds, as a live API does.

    python -m benchmarks.perf.trl_grpo [--quick] [--repeats 3] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

CONFIG = Path(__file__).resolve().parents[2] / "agents" / "grpo" / "configs" / "tiny-cpu.yaml"
_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_RESULT = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)


# ------------------------------------------------------------------------------------------ part 1


def _bundled(args: argparse.Namespace, tmp: str) -> tuple[dict[str, float], Any, Any]:
    """Steps of the bundled trainer, split as TRL's rows are; also its initial weights and task."""
    from drgym.agents.grpo.config import GRPOConfig
    from drgym.agents.grpo.metrics import read_metrics
    from drgym.agents.grpo.train import make_trainer

    cfg = GRPOConfig.from_yaml(
        CONFIG, output_dir=f"{tmp}/bundled", num_generations=args.generations,
        per_device_train_batch_size=args.prompts * args.generations, gradient_accumulation_steps=1,
        max_turn_tokens=args.tokens, max_steps=args.repeats + 1, save_strategy="no", warmstart_steps=0,
        copy_pretrain_steps=0, num_eval_questions=0, disable_tqdm=True, plot=False, beta=0.0,
    )
    trainer, callback = make_trainer(cfg)
    initial = copy.deepcopy(trainer.model)  # the TRL row starts from the same weights
    trainer.rollout_times = []
    _time_rollouts(trainer)
    row = _trl_row(trainer, args.repeats)
    steps = [r for r in read_metrics(f"{tmp}/bundled/metrics.jsonl") if "charts/env_seconds" in r][1:]
    row["env_s"] = sum(r["charts/env_seconds"] for r in steps) / args.repeats
    return row, initial, (cfg, callback.task, trainer.processing_class)


def _time_rollouts(trainer: Any) -> None:
    """Keep the time of each generation-and-scoring pass (the rollout) in ``trainer.rollout_times``."""
    score = trainer._generate_and_score_completions

    def timed(inputs: Any) -> Any:
        started = time.perf_counter()
        out = score(inputs)
        trainer.rollout_times.append(time.perf_counter() - started)
        return out

    trainer._generate_and_score_completions = timed


def _timed_trainer() -> type:
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """``GRPOTrainer`` that keeps the time of each generation-and-scoring pass (the rollout)."""

        rollout_times: list[float]

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            started = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            self.rollout_times.append(time.perf_counter() - started)
            return out

    return TimedGRPOTrainer


def _trl_args(out: str, cfg: Any, steps: int, max_completion_length: int, **extra: Any) -> Any:
    from drgym.integrations.trl import grpo_config

    batch = cfg.prompts_per_step * cfg.num_generations
    return grpo_config(
        output_dir=out, per_device_train_batch_size=batch, num_generations=cfg.num_generations,
        max_completion_length=max_completion_length, max_steps=steps, learning_rate=cfg.learning_rate,
        temperature=cfg.temperature, beta=0.0, epsilon=cfg.epsilon, use_cpu=True, bf16=False, report_to=[],
        logging_steps=1, save_strategy="no", seed=cfg.seed, gradient_checkpointing=False,
        disable_tqdm=True, **extra,
    )


def _trl_row(trainer: Any, repeats: int, env_s: float = 0.0) -> dict[str, float]:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep the log dicts of every step out of the table
    if not hasattr(trainer, "rollout_times"):
        trainer.rollout_times = []
    trainer.train()
    logs = [r for r in trainer.state.log_history if "step_time" in r][1:]  # step 1 warms up
    rollout_s = sum(trainer.rollout_times[1:]) / repeats
    batch = trainer.args.per_device_train_batch_size  # TRL counts only env_mask-1 tokens in mean_length
    return {
        "rollout_s": rollout_s,
        "update_s": sum(r["step_time"] for r in logs) / repeats - rollout_s,
        "env_s": env_s / repeats,
        "sampled": sum(r["completions/mean_length"] for r in logs) * batch / repeats,
    }


def _part1(args: argparse.Namespace, tmp: str) -> dict[str, dict[str, float]]:
    from drgym.integrations.trl import make_dataset
    from drgym.reward import score_episode

    rows: dict[str, dict[str, float]] = {}
    rows["bundled"], initial, (cfg, task, tokenizer) = _bundled(args, tmp)
    env_kwargs = {"dataset": task.records, **task.env_kwargs}
    dataset = make_dataset(system_prompt=cfg.system_prompt, **env_kwargs)
    dataset = dataset.select(task.train_indices[: args.prompts * (args.repeats + 1)])

    def reward(completions: list[Any], answers: list[list[str]], **kwargs: Any) -> list[float]:
        return [score_episode([c[-1]["content"]], a, mode=cfg.reward_mode).reward for c, a in zip(completions, answers)]

    class _Shape:  # the batch shape of the bundled row
        prompts_per_step, num_generations, learning_rate, temperature, epsilon, seed = (
            args.prompts, args.generations, cfg.learning_rate, cfg.temperature, cfg.epsilon, cfg.seed,
        )

    single = _timed_trainer()(
        model=initial, processing_class=tokenizer, reward_funcs=[reward],
        args=_trl_args(f"{tmp}/trl1", _Shape, args.repeats + 1, args.tokens), train_dataset=dataset,
    )
    rows["trl-1turn"] = _trl_row(single, args.repeats)
    return rows


# ------------------------------------------------------------------------------------------ part 2


class _SlowSearch:
    """A search backend that answers after ``latency`` seconds (a live search API's round trip)."""

    def __init__(self, inner: Any, latency: float) -> None:
        self.inner, self.latency, self.name = inner, latency, "slow"

    async def search(self, query: str, k: int = 10) -> Any:
        await asyncio.sleep(self.latency)
        return await self.inner.search(query, k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _turn(text: str) -> str:
    """The scripted policy: search the question, then answer with the first result's title."""
    question = _USER.findall(text)[0].strip()
    results = _RESULT.findall(text)
    if not results:
        call = {"name": "web_search", "arguments": {"query": [question]}}
        return f"<think>search</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
    first = re.search(r"1\. (.*)", results[-1])
    return f"<think>found</think><answer>{first.group(1) if first else 'none'}</answer>"


def _scripted_model(model: Any, tokenizer: Any) -> Any:
    """The tiny model with ``generate`` replaced by the scripted policy (its forward stays the model's)."""
    import torch

    def generate(input_ids: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            text = tokenizer.decode(ids[mask.bool()].tolist())
            rows.append(tokenizer(_turn(text), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        out = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_token_id, dtype=input_ids.dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return torch.cat([input_ids, out], dim=1)

    model.generate = generate
    return model


class _ScriptedGenerator:
    """The same policy as an ``agents.grpo.rollout.Generator`` for ``make_rollout_func``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def generate(self, prompts: Any, budgets: Any, *, temperature: float, top_p: float = 1.0, top_k: int = 0,
                 seeds: Any) -> list[Any]:
        from drgym.agents.grpo.rollout import Sample

        out = []
        for prompt in prompts:
            text = _turn(self.tokenizer.decode(prompt))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Sample(ids, [0.0] * len(ids), text, "stop"))
        return out


def _part2(args: argparse.Namespace, tmp: str) -> dict[str, float]:
    from trl.chat_template_utils import qwen2_5_chat_template

    from drgym.data.synthetic import make_synthetic_task
    from drgym.integrations.trl import (
        WebResearchToolEnv,
        finish_episodes,
        make_dataset,
        make_rollout_func,
        rollout_reward,
    )
    from drgym.llm.tiny import tiny_causal_lm
    from drgym.search.local import BM25Backend

    records, passages = make_synthetic_task(32, seed=0)
    search = _SlowSearch(BM25Backend(passages, corpus="synthetic", cache=False), args.latency)
    texts = [t for p in passages for t in (p.title, p.text)] + [t for r in records for t in (r.question, *r.answers)]
    env_kwargs = {"dataset": records, "search": search, "max_turns": 3, "results_per_query": 2}
    system = "Search with web_search, then answer in <answer></answer>."
    dataset = make_dataset(system_prompt=system, **env_kwargs)
    trainer_cls = _timed_trainer()

    class _Cfg:  # the batch shape of part 1
        prompts_per_step, num_generations, learning_rate, temperature, epsilon, seed = (
            args.prompts, args.generations, 1e-4, 1.0, 0.2, 0,
        )

    out: dict[str, float] = {}
    for name in ("environment_factory", "rollout_func"):
        model, tokenizer = tiny_causal_lm("word", seed=0, texts=texts)
        tokenizer.chat_template = qwen2_5_chat_template
        common = {
            "processing_class": tokenizer,
            "args": _trl_args(f"{tmp}/{name}", _Cfg, args.repeats + 1, 512),
            "train_dataset": dataset,
        }
        if name == "environment_factory":
            trainer = trainer_cls(
                model=_scripted_model(model, tokenizer), reward_funcs=[finish_episodes],
                environment_factory=functools.partial(WebResearchToolEnv, **env_kwargs), **common,
            )
        else:
            rollout = make_rollout_func(system_prompt=system, generator=_ScriptedGenerator(tokenizer), **env_kwargs)
            trainer = trainer_cls(model=model, reward_funcs=[rollout_reward], rollout_func=rollout, **common)
        out[name] = _trl_row(trainer, args.repeats)["rollout_s"]
    return out


# ------------------------------------------------------------------------------------------ report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller batch, one timed step (smoke test)")
    parser.add_argument("--prompts", type=int, default=2, help="questions per batch")
    parser.add_argument("--generations", type=int, default=4, help="episodes per question")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per turn at most")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds a search takes in part 2")
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (1: on a shared 2-core machine, 2 threads made one forward vary 20x)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.prompts, args.generations, args.tokens, args.repeats, args.latency = 2, 2, 16, 1, 0.05

    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("1", "both"):
            rows = _part1(args, tmp)
            base = rows["bundled"]
            base_step = base["rollout_s"] + base["update_s"]
            print(
                f"GRPO step, tiny model (tiny-cpu.yaml) on CPU ({args.threads} torch thread): {args.prompts} "
                f"questions x {args.generations} episodes, <= {args.tokens} tokens per turn, mean of "
                f"{args.repeats} steps after a warm-up"
            )
            print("| trainer | sampled tokens | rollout s | sampled tokens/s | update s | step s | env share |"
                  " step / bundled |")
            print("|---|---|---|---|---|---|---|---|")
            for name, r in rows.items():
                step = r["rollout_s"] + r["update_s"]
                print(
                    f"| {name} | {r['sampled']:.0f} | {r['rollout_s']:.2f} | {r['sampled'] / r['rollout_s']:.0f} | "
                    f"{r['update_s']:.2f} | {step:.2f} | {100 * r['env_s'] / step:.1f}% | {step / base_step:.2f}x |"
                )
        if args.part in ("2", "both"):
            wait = _part2(args, tmp)
            n = args.prompts * args.generations
            print(
                f"\ntool wait: {n} episodes (search once, then answer), each search {1000 * args.latency:.0f} ms; "
                "rollout seconds per step on TRL's trainer"
            )
            print("| path | rollout s | ratio |")
            print("|---|---|---|")
            for name, seconds in wait.items():
                print(f"| {name} | {seconds:.2f} | {seconds / wait['rollout_func']:.2f}x |")


if __name__ == "__main__":
    main()
