"""The one interface every agent implements, so baselines and trained policies plug into the env the same way."""

from __future__ import annotations

import asyncio
import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from drgym._loop import SyncRunner
from drgym.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "Agent", "BaseAgent", "agent_class", "agent_names", "make_agent"]

ENTRY_POINT_GROUP = "drgym.agents"
"""Agents are found by name in this entry-point group, drgym's own included (see pyproject.toml)."""


@runtime_checkable
class Agent(Protocol):
    """A policy that plays ``WebResearch-v0`` turn by turn.

    ``reset`` sees the question and the reset ``info`` (system prompt, tool schemas, chat messages); ``act``
    returns the next turn's text given the latest observation and ``info``. ``env_options`` lists the env
    options the agent needs (merged into ``gymnasium.make`` kwargs by the runners and the CLI).

    Two optional class attributes tell a runner which of its run-wide options to pass (``BaseAgent`` sets
    both empty): ``run_options``, the constructor arguments among ``llm``, ``model``, ``checkpoint``,
    ``search``, ``corpus`` and ``search_kwargs`` the agent takes; ``requires_one_of``, those of which at least
    one must be given for it to run (e.g. ``("llm",)``).
    """

    name: str
    env_options: ClassVar[dict[str, Any]]

    def reset(self, question: str, info: dict[str, Any]) -> None: ...

    def act(self, observation: str, info: dict[str, Any]) -> str: ...

    async def aact(self, observation: str, info: dict[str, Any]) -> str: ...


class BaseAgent:
    """Convenience base: implement ``act`` (sync) or ``aact`` (async); the other is derived.

    ``last_usage`` may be set by ``act``/``aact`` to ``{"prompt_tokens": n, "completion_tokens": m}`` so the
    runners can record token counts. An ``act`` derived from ``aact`` runs on an event loop of the agent's own
    (its clients' sessions live there); :meth:`close` releases them from synchronous code.
    """

    name: str = "agent"
    _runner: SyncRunner | None = None
    env_options: ClassVar[dict[str, Any]] = {}
    run_options: ClassVar[tuple[str, ...]] = ()
    requires_one_of: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.last_usage: dict[str, int] | None = None

    def reset(self, question: str, info: dict[str, Any]) -> None:
        self.last_usage = None

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if type(self).aact is BaseAgent.aact:
            raise NotImplementedError(f"{type(self).__name__} must implement act() or aact()")
        if self._runner is None:
            self._runner = SyncRunner()
        return self._runner.run(self.aact(observation, info))

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        if type(self).act is BaseAgent.act:
            raise NotImplementedError(f"{type(self).__name__} must implement act() or aact()")
        return await asyncio.to_thread(self.act, observation, info)

    def close(self) -> None:
        """Release what the agent holds from synchronous code: its ``aclose()`` (if it has one) on the loop
        ``act`` used, then that loop. Async code awaits ``aclose()`` instead."""
        runner, self._runner = self._runner, None
        aclose = getattr(self, "aclose", None)  # optional in the Agent protocol
        if runner is not None and runner.loops():
            runner.close(aclose)
        elif aclose is not None:  # act never ran a loop of its own
            asyncio.run(aclose())


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def agent_names() -> list[str]:
    """Every agent name ``make_agent`` accepts: those installed under the ``drgym.agents`` entry points."""
    return sorted(_entry_points())


def agent_class(name: str) -> Any:
    """The agent factory (usually a class) for ``name``, without building an agent.

    ``name`` is an entry-point name (``drgym agents`` lists them) or an import path ``"module:attr"``, which
    runs an agent that is not installed (a test double, a notebook's class).

    Raises:
        ConfigError: An unknown name (the message lists the valid ones and suggests the closest).
    """
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"agent `{name}` cannot be imported: {exc}") from exc
    table = _entry_points()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"unknown agent `{name}`; valid agents: {', '.join(sorted(table))}.{hint}")
    return table[name].load()


def make_agent(name: str, **kwargs: Any) -> Agent:
    """Build an agent by name (see :func:`agent_class`); unknown names raise ``ConfigError``."""
    return agent_class(name)(**kwargs)
