"""Test doubles for the agents' tests: a chat model with replies written in advance, and a context window.

``ScriptedChat`` stands in for the *model* (its replies are the input under test: the agents' parsing, repair
and recovery); everything else in these tests is real (environment, BM25 backend, HTTP client and server).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from drgym.llm.base import Completion, ContextOverflowError, Message

Reply = str | BaseException | Callable[[list[Message]], str]

URL_RE = re.compile(r"https://local\.drgym/[^\s<>\"]+")


class ScriptedChat:
    """Replies in order: a string, an exception to raise, or a function of the messages.

    Records every call. ``delay`` seconds are slept before each reply; ``in_flight``/``max_in_flight`` count
    concurrent calls. ``prompt_tokens`` is the prompt's character count (a real property of the input).
    """

    def __init__(self, replies: list[Reply] | Reply, *, delay: float = 0.0) -> None:
        self.replies = replies
        self.delay = delay
        self.calls: list[tuple[list[Message], dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        index = len(self.calls)
        self.calls.append(([dict(m) for m in messages], dict(sampling)))
        if isinstance(self.replies, list):
            if index >= len(self.replies):
                raise AssertionError(f"model called {index + 1} times, {len(self.replies)} replies scripted")
            reply = self.replies[index]
        else:
            reply = self.replies
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if isinstance(reply, BaseException):
            raise reply
        text = reply(messages) if callable(reply) else reply
        return Completion(text=text, tokens=max(1, len(text.split())),
                          prompt_tokens=sum(len(m["content"]) for m in messages), finish_reason="stop")


class ContextWindow:
    """A chat model with a context limit in characters: longer prompts raise ``ContextOverflowError``."""

    def __init__(self, inner: Any, max_chars: int) -> None:
        self.inner = inner
        self.max_chars = max_chars
        self.overflows = 0

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        size = sum(len(m["content"]) for m in messages)
        if size > self.max_chars:
            self.overflows += 1
            raise ContextOverflowError(f"the prompt is {size} characters, the window is {self.max_chars}")
        return await self.inner.complete(messages, **sampling)


class Recording:
    """Wraps a real chat client and records what reached it (e.g. behind the OpenAI-compatible server)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[list[Message], dict[str, Any]]] = []

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        self.calls.append(([dict(m) for m in messages], dict(sampling)))
        return await self.inner.complete(messages, **sampling)


def tool_responses(messages: list[Message]) -> list[str]:
    """The tool results in a conversation as the model received it (either tool role)."""
    return [m["content"] for m in messages
            if m["role"] == "tool" or (m["role"] == "user" and m["content"].startswith("<tool_response>"))]


def search_then_answer(answers: dict[str, str]) -> Callable[[list[Message]], str]:
    """A model that searches the question once, then answers it from ``answers`` (question -> answer)."""

    def reply(messages: list[Message]) -> str:
        question = next(m["content"] for m in messages if m["role"] == "user")
        if not tool_responses(messages):
            call = json.dumps({"name": "web_search", "arguments": {"query": [question]}})
            return f"<think>I will search.</think>\n<tool_call>\n{call}\n</tool_call>"
        return f"<think>Found it.</think>\n<answer>{answers.get(question, 'unknown')}</answer>"

    return reply
