"""The one interface every agent implements, so baselines and trained policies plug into the env the same way."""

from __future__ import annotations

import asyncio
import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from drgym.errors import ConfigError

__all__ = ["AGENTS", "Agent", "BaseAgent", "agent_names", "make_agent"]

AGENTS: dict[str, str] = {
    "scripted": "agents.scripted:ScriptedAgent",
    "prompt": "agents.prompt_baseline:PromptAgent",
    "rag": "agents.rag_baseline:RAGAgent",
    "grpo": "agents.grpo.agent:GRPOAgent",
    "deepresearcher": "agents.deepresearcher:DeepResearcherAgent",
}
"""Built-in agents by name. Other packages add theirs through the ``drgym.agents`` entry-point group."""


@runtime_checkable
class Agent(Protocol):
    """A policy that plays ``WebResearch-v0`` turn by turn.

    ``reset`` sees the question and the reset ``info`` (system prompt, tool schemas, chat messages); ``act``
    returns the next turn's text given the latest observation and ``info``. ``env_options`` lists the env
    options the agent needs (merged into ``gymnasium.make`` kwargs by the runners and the CLI).
    """

    name: str
    env_options: ClassVar[dict[str, Any]]

    def reset(self, question: str, info: dict[str, Any]) -> None: ...

    def act(self, observation: str, info: dict[str, Any]) -> str: ...

    async def aact(self, observation: str, info: dict[str, Any]) -> str: ...


class BaseAgent:
    """Convenience base: implement ``act`` (sync) or ``aact`` (async); the other is derived.

    ``last_usage`` may be set by ``act``/``aact`` to ``{"prompt_tokens": n, "completion_tokens": m}`` so the
    runners can record token counts.
    """

    name: str = "agent"
    env_options: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.last_usage: dict[str, int] | None = None

    def reset(self, question: str, info: dict[str, Any]) -> None:
        self.last_usage = None

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if type(self).aact is BaseAgent.aact:
            raise NotImplementedError(f"{type(self).__name__} must implement act() or aact()")
        from drgym._loop import run_sync

        return run_sync(self.aact(observation, info))

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        if type(self).act is BaseAgent.act:
            raise NotImplementedError(f"{type(self).__name__} must implement act() or aact()")
        return await asyncio.to_thread(self.act, observation, info)


def _registry() -> dict[str, str]:
    table = dict(AGENTS)
    for ep in entry_points(group="drgym.agents"):
        table.setdefault(ep.name, ep.value)
    return table


def agent_names() -> list[str]:
    """Every agent name ``make_agent`` accepts (built-in and installed through entry points)."""
    return sorted(_registry())


def make_agent(name: str, **kwargs: Any) -> Agent:
    """Build an agent by name; unknown names raise ``ConfigError`` listing the valid ones."""
    table = _registry()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"unknown agent `{name}`; valid agents: {', '.join(sorted(table))}.{hint}")
    module_name, _, attr = table[name].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**kwargs)
