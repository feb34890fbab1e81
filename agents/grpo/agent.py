"""A trained GRPO policy as a drgym agent: ``drgym episode --agent grpo --checkpoint DIR``.

The agent writes each turn with the checkpoint's model through
:class:`drgym.llm.local.TransformersChatClient`, using the chat template, system prompt, stop strings and turn
length the policy was trained with (read from the checkpoint's ``config.yaml``), so it sees the same text it
saw in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from drgym.agent import BaseAgent
from drgym.errors import ConfigError

STOP = ("</tool_call>", "</answer>")
"""Strings that end a policy turn (the protocol's closing tags, as in training: drgym.integrations.trl.STOP)."""

__all__ = ["GRPOAgent"]


class GRPOAgent(BaseAgent):
    """Plays ``WebResearch-v0`` with a GRPO checkpoint.

    Args:
        checkpoint: A ``checkpoint-N`` directory, a run's final save, or a run's ``output_dir`` (its final save
            when the run finished, else its newest ``checkpoint-N``).
        llm: Serve the policy elsewhere instead of loading it here: a chat client, or a spec such as
            ``openai:http://localhost:8000/v1`` or ``vllm:PATH`` (see :func:`drgym.llm.factory.make_client`).
        model: The model name sent with ``llm`` requests.
        temperature: Sampling temperature of the turns (default 0: greedy, for evaluation).
        max_new_tokens: Tokens per turn at most (default: the training ``max_turn_tokens``, else
            ``max_completion_length``).
        device: Where the checkpoint's model runs (default: CUDA when available, else CPU).
        seed: Seeds the sampling (reproducible episodes when ``temperature > 0``).
    """

    name = "grpo"
    env_options: ClassVar[dict[str, Any]] = {}
    run_options: ClassVar[tuple[str, ...]] = ("llm", "model", "checkpoint")
    requires_one_of: ClassVar[tuple[str, ...]] = ("checkpoint", "llm")

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        llm: Any = None,
        model: str | None = None,
        *,
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        device: str = "auto",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if checkpoint is None:
            raise ConfigError(
                "the grpo agent needs a checkpoint: pass --checkpoint DIR (a checkpoint directory or "
                "a training run's output_dir)"
            )
        from .checkpoint import resolve_checkpoint
        from .config import GRPOConfig

        self.checkpoint = resolve_checkpoint(checkpoint)
        self.config = GRPOConfig.from_yaml(self.checkpoint / "config.yaml")
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens or self.config.max_turn_tokens or self.config.max_completion_length
        # The observation format the policy learned (how many results a search shows).
        self.env_options = {"results_per_query": self.config.results_per_query}
        self.client = self._client(llm, model, device, seed)

    def _client(self, llm: Any, model: str | None, device: str, seed: int | None) -> Any:
        if llm is not None and not isinstance(llm, str):
            return llm
        if isinstance(llm, str):
            from drgym.llm.factory import make_client

            return make_client(llm, model=model)
        from drgym.llm.local import TransformersChatClient

        from .checkpoint import load_model

        policy, tokenizer = load_model(self.checkpoint)
        policy.to(_device(device))
        policy.eval()
        return TransformersChatClient(
            policy,
            tokenizer,
            chat_template=self.config.chat_template,
            stop=list(STOP),
            max_new_tokens=self.max_new_tokens,
            seed=seed,
        )

    def _messages(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        messages = [dict(m) for m in info["messages"]]
        if self.config.system_prompt is not None and messages and messages[0]["role"] == "system":
            messages[0]["content"] = self.config.system_prompt
        return messages

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        """The next turn, generated from the conversation in ``info["messages"]``."""
        completion = await self.client.complete(
            self._messages(info),
            temperature=self.temperature,
            max_tokens=self.max_new_tokens,
            stop=list(STOP),
        )
        self.last_usage = {
            "prompt_tokens": completion.prompt_tokens or 0,
            "completion_tokens": completion.tokens or 0,
        }
        return completion.text


def _device(name: str) -> Any:
    """``"auto"``: CUDA when available, else CPU; anything else as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"`device` {name!r} is not a torch device: {exc}") from exc
