"""A stand-in for verl's LLM server manager that generates with a real tiny model, and the loop's wiring.

``TinyServer.generate`` has the signature of ``verl.workers.rollout.llm_server.LLMServerClient.generate`` and
returns verl's ``TokenOutput``: token ids the tiny Qwen2 model sampled (KV-cached, seeded) and their
logprobs, or, for a scripted turn, the ids of that text with the logprobs the model gives them (teacher
forcing: real ids, real logprobs, a known text so an episode can reach its tools and answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput

ROOT = Path(__file__).resolve().parents[2]
AGENT_LOOP_YAML = ROOT / "scripts" / "verl" / "agent_loop.yaml"


class TinyServer:
    """``generate(request_id, *, prompt_ids, sampling_params, **kw) -> TokenOutput`` over a tiny model."""

    def __init__(self, model: Any, tokenizer: Any, script: Sequence[str] | None = None, seed: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.script = list(script) if script is not None else None
        self.seed = seed
        self.calls: list[tuple[list[int], dict[str, Any], list[int]]] = []

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any
    ) -> TokenOutput:
        max_tokens = int(sampling_params["max_tokens"])
        if self.script is not None:
            text = self.script.pop(0)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            ids = ids[:max_tokens]
            lps = self.score(prompt_ids, ids)
        else:
            ids, lps = self._sample(prompt_ids, max_tokens, float(sampling_params.get("temperature", 1.0)))
        self.calls.append((list(prompt_ids), dict(sampling_params), list(ids)))
        return TokenOutput(
            token_ids=ids, log_probs=lps if sampling_params.get("logprobs") else None, stop_reason="completed"
        )

    @torch.no_grad()
    def score(self, prompt_ids: Sequence[int], ids: Sequence[int], temperature: float = 1.0) -> list[float]:
        """Logprobs the model gives ``ids`` after ``prompt_ids`` (one forward pass)."""
        full = torch.tensor([list(prompt_ids) + list(ids)])
        logits = self.model(full).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(1, torch.tensor(list(ids)).unsqueeze(1)).squeeze(1).tolist()

    @torch.no_grad()
    def _sample(self, prompt_ids: Sequence[int], max_tokens: int, temperature: float) -> tuple[list[int], list[float]]:
        gen = torch.Generator().manual_seed(self.seed + len(self.calls))
        out = self.model(torch.tensor([list(prompt_ids)]), use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
        ids: list[int] = []
        lps: list[float] = []
        for _ in range(max_tokens):
            logp = torch.log_softmax(logits.float() / temperature, dim=-1)
            token = int(torch.multinomial(logp.exp(), 1, generator=gen))
            ids.append(token)
            lps.append(float(logp[token]))
            if token == self.tokenizer.eos_token_id:
                break
            out = self.model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1]
        return ids, lps


def make_loop(
    tokenizer: Any,
    server: Any,
    *,
    env: Mapping[str, Any] | None = None,
    response_length: int = 3000,
    trainer_env: Mapping[str, Any] | None = None,
    entry: Any = None,
) -> Any:
    """The agent loop as verl's ``AgentLoopWorker._run_agent_loop`` builds it (``hydra.utils.instantiate`` of
    the registry entry, with the same arguments)."""
    import hydra
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import drgym.integrations.verl.agent_loop  # noqa: F401  (registers "drgym")

    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"prompt_length": 4096, "response_length": response_length}},
            "data": {},
            **({"drgym": {"env": dict(trainer_env)}} if trainer_env else {}),
        }
    )
    if entry is None:
        entry = dict(_agent_loop_registry["drgym"])
        if env is not None:
            entry["env"] = dict(env)
    return hydra.utils.instantiate(
        config=entry,
        trainer_config=DictConfigWrap(config=config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type="qwen2",
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        tools=ToolListWrap([]),
    )
