"""The scripted (non-LLM) agent: search the question, browse the top results, answer with the best span.

It needs no model, plays the env's protocol exactly, and sets the floor every learning agent must beat.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from drgym.agent import BaseAgent

from .spans import best_span

__all__ = ["ScriptedAgent"]

_URL = re.compile(r"https?://[^\s<>\"')\]]+")


class ScriptedAgent(BaseAgent):
    """Three turns: ``web_search([question])``, ``browse_webpage(top URLs)``, ``<answer>best span</answer>``."""

    name = "scripted"
    env_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, pages_to_read: int = 3) -> None:
        super().__init__()
        self.pages_to_read = pages_to_read
        self._question = ""
        self._texts: list[str] = []
        self._step = 0

    def reset(self, question: str, info: dict[str, Any]) -> None:
        super().reset(question, info)
        self._question = info.get("question", question)
        self._texts = []
        self._step = 0

    def act(self, observation: str, info: dict[str, Any]) -> str:
        self._step += 1
        if self._step > 1:
            self._texts.append(observation)
        if self._step == 1:
            call = {"name": "web_search", "arguments": {"query": [self._question]}}
            return f"<think>I will search for the question.</think><tool_call>{json.dumps(call)}</tool_call>"
        if self._step == 2:
            urls = list(dict.fromkeys(_URL.findall(observation)))[: self.pages_to_read]
            if urls:
                call = {"name": "browse_webpage", "arguments": {"url_list": urls}}
                return f"<think>I will read the top results.</think><tool_call>{json.dumps(call)}</tool_call>"
        answer = best_span(self._question, self._texts) or "unknown"
        return f"<think>The best-supported span is {answer}.</think><answer>{answer}</answer>"

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        return self.act(observation, info)
