"""Fixtures of the GRPO tests: tiny configs, a tiny real model, and a scripted policy that drives it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from drgym.agents.grpo.config import GRPOConfig
from drgym.agents.grpo.losses import forward_logprobs, pad_batch
from drgym.agents.grpo.rollout import Sample
from drgym.agents.scripted.spans import best_span

_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)


def tiny_config(tmp_path: Path, **overrides) -> GRPOConfig:
    """A config that trains in about a second per step on a CPU (drgym and TRL settings mixed, as in YAML)."""
    values = {
        "model_name_or_path": "tiny",
        "use_cpu": True,
        "gradient_checkpointing": False,
        "system_prompt": "Search, then answer.",
        "dataset": "synthetic",
        "num_train_questions": 6,
        "num_eval_questions": 0,
        "max_turns": 2,
        "results_per_query": 2,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_turn_tokens": 12,
        "max_completion_length": 256,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "save_steps": 2,
        "output_dir": str(tmp_path / "run"),
        "plot": False,
        "disable_tqdm": True,
        "seed": 0,
    }
    values.update(overrides)
    return GRPOConfig.from_dict(values)


class ScriptedPolicy:
    """A policy with fixed behaviour, written through a real tiny model.

    Turn 1 searches the question; turn 2 answers with the scripted agent's best span of the search results
    (even seeds) or writes a broken answer (odd seeds), so rewards differ within a group. The ids are the
    tokens of that text and the logprobs the model's own log-probs of them (temperature 1), as a sampler's.
    """

    def __init__(self, model, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.calls: list[list[Sample]] = []

    def _turn(self, context: str, seed: int) -> str:
        question = _USER.search(context).group(1)
        if "<tool_response>" not in context:
            return (
                '<think>search</think><tool_call>{"name": "web_search", "arguments": {"query": ["'
                + question
                + '"]}}</tool_call>'
            )
        if seed % 2:
            return "<think>unsure</think><answer>broken"
        observation = context.rsplit("<tool_response>", 1)[1]
        return f"<think>found</think><answer>{best_span(question, [observation]) or 'none'}</answer>"

    def generate(self, prompts, budgets, *, temperature, top_p=1.0, top_k=0, seeds):
        import torch

        samples = []
        for prompt, budget, seed in zip(prompts, budgets, seeds):
            text = self._turn(self.tokenizer.decode(prompt), seed)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:budget]
            batch = pad_batch([prompt + ids], [[0] * len(prompt) + [1] * len(ids)], 0)
            with torch.no_grad():
                logp, _, first = forward_logprobs(self.model, *batch)
            lps = logp[0, len(prompt) - first :].tolist()
            samples.append(Sample(ids, lps, self.tokenizer.decode(ids), "stop"))
        self.calls.append(samples)
        return samples


@pytest.fixture(scope="module")
def tiny():
    from drgym.llm.tiny import tiny_causal_lm

    return tiny_causal_lm(seed=0)
