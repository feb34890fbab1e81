"""The original DeepResearcher policy (e.g. ``GAIR/DeepResearcher-7b``) as a drgym agent, prompted unchanged.

The agent plays under ``protocol="deepresearcher"`` (its ``env_options``): it sends the env's conversation as
is (the original's system prompt with Qwen2.5's tools block, the user question, the turns so far) to an
OpenAI-compatible server that applies the model's own chat template, with the assistant turn opened by the
forced ``<think>`` and continued (vLLM's ``continue_final_message``), exactly as the original generated.
Serve the checkpoint with vLLM (``vllm serve GAIR/DeepResearcher-7b``) and point ``llm`` at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from drgym.agent import BaseAgent
from drgym.errors import ConfigError
from drgym.llm.base import ChatClient
from drgym.protocol_deepresearcher import GENERATION_PREFIX

__all__ = ["DeepResearcherAgent"]

_STOPS = ["</tool_call>", "</answer>"]


class DeepResearcherAgent(BaseAgent):
    """Plays with a policy trained by the original code, through a server speaking the OpenAI chat API.

    Args:
        llm: An OpenAI-compatible server (``openai:http://HOST:8000/v1``, the way vLLM serves the checkpoint)
            or a chat client whose ``complete`` accepts vLLM's ``continue_final_message``.
        model: The model name sent with requests (``None``: the server's first model).
        temperature: Sampling temperature (default 0: greedy, for evaluation).
        max_tokens: Tokens one turn may generate (the paper: 2000).
        sampling: Further request fields (``top_p``, ``seed``...).
    """

    name = "deepresearcher"
    env_options: ClassVar[dict[str, Any]] = {"protocol": "deepresearcher"}
    run_options: ClassVar[tuple[str, ...]] = ("llm", "model")
    requires_one_of: ClassVar[tuple[str, ...]] = ("llm",)

    def __init__(
        self,
        llm: str | ChatClient | None = None,
        model: str | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int = 2000,
        sampling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if llm is None:
            raise ConfigError(
                "the deepresearcher agent needs a server: pass llm='openai:http://HOST:8000/v1' "
                "(e.g. --agent-arg deepresearcher.llm=openai:http://localhost:8000/v1)"
            )
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ConfigError(f"DeepResearcherAgent: max_tokens must be a positive integer, got {max_tokens!r}")
        if isinstance(llm, str):
            from drgym.llm import make_client

            llm = make_client(llm, model=model)
        self.client = llm
        self.sampling: dict[str, Any] = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stop": _STOPS,
            "include_stop_str_in_output": True,  # the closing tag is part of the turn
            "continue_final_message": True,  # generate after the forced "<think>", as the original did
            "add_generation_prompt": False,
            **dict(sampling or {}),
        }

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        """The next turn: the forced ``<think>`` and what the model writes after it."""
        prefix = str(info.get("generation_prefix") or GENERATION_PREFIX)
        messages = [dict(m) for m in info["messages"]] + [{"role": "assistant", "content": prefix}]
        completion = await self.client.complete(messages, **self.sampling)
        usage = {"completion_tokens": completion.tokens} if completion.tokens is not None else {}
        if completion.prompt_tokens is not None:
            usage["prompt_tokens"] = completion.prompt_tokens
        self.last_usage = usage or None
        text = completion.text
        return text if text.startswith(prefix) else prefix + text

    async def aclose(self) -> None:
        """Close the client's HTTP sessions."""
        close = getattr(self.client, "aclose", None)
        if close is not None:
            await close()
