"""Train a policy on WebResearch-v0 with TRL's GRPOTrainer, through either of drgym's two TRL entry points.

``--path rollout_func`` (default) plays whole drgym episodes per rollout (the env's system prompt, all episodes
of a batch at once, tool tokens masked out of the loss); ``--path environment_factory`` lets TRL's own tool
loop drive ``WebResearchToolEnv``. On a CPU, ``--model tiny`` trains a tiny random Qwen2 on the synthetic task in
a minute or two (it learns little in that time: the point is the pipeline). On a GPU, give a chat model and a
dataset, and add vLLM with ``--vllm``:

    pip install "drgym[trl]"
    python examples/trl_grpo.py                                        # CPU, tiny model, synthetic task
    python examples/trl_grpo.py --path environment_factory
    accelerate launch examples/trl_grpo.py --model Qwen/Qwen2.5-7B-Instruct --dataset deepresearcher-dev \\
        --search serper --steps 100 --generations 16 --max-completion-length 8192 --vllm
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func / environment_factory are experimental

from drgym.integrations.trl import (  # checks the installed TRL version
    WebResearchToolEnv,
    finish_episodes,
    grpo_config,
    make_dataset,
    make_rollout_func,
    rollout_reward,
)


def tiny_task(questions: int) -> tuple[dict[str, Any], Any, Any]:
    """The synthetic task, searched in memory, and a tiny Qwen2 with a word tokenizer trained on its text."""
    from trl.chat_template_utils import qwen2_5_chat_template

    from drgym.data.synthetic import make_synthetic_task
    from drgym.llm.tiny import tiny_causal_lm
    from drgym.search.local import BM25Backend

    records, passages = make_synthetic_task(questions, seed=0)
    texts = [t for p in passages for t in (p.title, p.text)] + [t for r in records for t in (r.question, *r.answers)]
    model, tokenizer = tiny_causal_lm("word", seed=0, texts=texts)
    tokenizer.chat_template = qwen2_5_chat_template  # a template TRL can parse tool calls from
    env_kwargs = {
        "dataset": records,
        "search": BM25Backend(passages, corpus="synthetic", cache=False),
        "max_turns": 3,
        "results_per_query": 2,
    }
    return env_kwargs, model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=("rollout_func", "environment_factory"), default="rollout_func")
    parser.add_argument("--model", default="tiny", help='"tiny" (CPU demo) or a causal LM name or path')
    parser.add_argument("--dataset", default="synthetic", help='"synthetic" (with --model tiny) or a drgym dataset')
    parser.add_argument("--search", default="local", help="search backend of a drgym dataset (local, serper, ...)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=2, help="questions per step")
    parser.add_argument("--generations", type=int, default=4, help="episodes per question (GRPO group)")
    parser.add_argument("--max-completion-length", type=int, default=384, help="tokens of a whole episode")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--vllm", action="store_true", help="generate with vLLM (colocate mode, GPU)")
    parser.add_argument("--output-dir", default="runs/trl-grpo")
    args = parser.parse_args(argv)

    if args.model == "tiny":
        import torch

        torch.set_num_threads(1)  # a 64-wide model gains nothing from a second thread, and loses on a busy CPU
        env_kwargs, model, tokenizer = tiny_task(64)
        system_prompt: str | None = "Search with web_search, then answer in <answer></answer>."
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        env_kwargs = {"dataset": args.dataset, "search": args.search, "max_turns": args.max_turns}
        system_prompt = None  # the env's own (the paper's) system prompt

    config = grpo_config(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        temperature=1.0,
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=args.model == "tiny",
        bf16=args.model != "tiny",
        gradient_checkpointing=args.model != "tiny",
        use_vllm=args.vllm,
        vllm_mode="colocate",
        max_tool_calling_iterations=args.max_turns,
    )
    dataset = make_dataset(system_prompt=system_prompt, **env_kwargs)

    from trl import GRPOTrainer

    if args.path == "rollout_func":
        trainer = GRPOTrainer(
            model=model,
            processing_class=tokenizer,
            reward_funcs=[rollout_reward],
            args=config,
            train_dataset=dataset,
            rollout_func=make_rollout_func(system_prompt=system_prompt, **env_kwargs),
        )
    else:
        trainer = GRPOTrainer(
            model=model,
            processing_class=tokenizer,
            reward_funcs=[finish_episodes],  # hands each env the final answer; the env's get_reward scores it
            args=config,
            train_dataset=dataset,
            environment_factory=functools.partial(WebResearchToolEnv, **env_kwargs),
        )
    started = time.perf_counter()
    trainer.train()
    rewards = [r["reward"] for r in trainer.state.log_history if "reward" in r]
    print(f"{args.path}: {len(rewards)} steps in {time.perf_counter() - started:.0f} s; "
          f"mean reward {rewards[0]:.3f} (first step) -> {rewards[-1]:.3f} (last step)")


if __name__ == "__main__":
    main()
