"""Agents for the benchmark tests: the scripted agent, made to crash or to be interrupted on purpose."""

from __future__ import annotations

from typing import Any, ClassVar

from drgym.agents.scripted import ScriptedAgent

__all__ = ["CrashyAgent", "InterruptingAgent"]


class CrashyAgent(ScriptedAgent):
    """Plays like the scripted agent, but raises on the questions whose record id is in ``crash_on``."""

    name = "crashy"

    def __init__(self, crash_on: list[str] | None = None) -> None:
        super().__init__()
        self.crash_on = set(crash_on or [])
        self._record_id = ""

    def reset(self, question: str, info: dict[str, Any]) -> None:
        super().reset(question, info)
        self._record_id = str(info.get("record_id", ""))

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if self._record_id in self.crash_on:
            raise RuntimeError(f"planned crash on {self._record_id}")
        return super().act(observation, info)


class InterruptingAgent(ScriptedAgent):
    """Plays like the scripted agent until ``interrupt_after`` episodes have started in this process, then
    raises KeyboardInterrupt (as a Ctrl-C would) at the start of the next one. Class attributes, so that a
    test can stop and resume a run without changing the agent's arguments."""

    name = "interrupting"
    started: ClassVar[int] = 0
    interrupt_after: ClassVar[int] = 10**9

    def reset(self, question: str, info: dict[str, Any]) -> None:
        if InterruptingAgent.started >= self.interrupt_after:
            raise KeyboardInterrupt
        InterruptingAgent.started += 1
        super().reset(question, info)
