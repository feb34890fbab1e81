"""Small real implementations of the interfaces the browse layer depends on, for its tests.

``ScriptedClient`` stands in for the reading *model* (its replies are the contract under test); ``DictBackend``
is a complete in-memory search backend with injectable faults.
"""

from __future__ import annotations

import asyncio
from typing import Any

from drgym.document import Document
from drgym.errors import FetchError
from drgym.llm.base import Completion, Message
from drgym.search.base import Result


class ScriptedClient:
    """A chat model whose replies are written in advance; records every prompt and sampling argument.

    Each reply is a string, or an exception to raise for that call; ``delays`` (seconds) are slept first.
    """

    def __init__(self, replies: list[str | BaseException], delays: list[float] | None = None) -> None:
        self.replies = list(replies)
        self.delays = list(delays or [])
        self.calls: list[tuple[list[Message], dict[str, Any]]] = []

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        index = len(self.calls)
        self.calls.append((messages, sampling))
        if index >= len(self.replies):
            raise AssertionError(f"the model was called {index + 1} times, only {len(self.replies)} scripted")
        if index < len(self.delays) and self.delays[index]:
            await asyncio.sleep(self.delays[index])
        reply = self.replies[index]
        if isinstance(reply, BaseException):
            raise reply
        return Completion(text=reply, tokens=len(reply.split()), finish_reason="stop")

    def user_prompt(self, index: int) -> str:
        return self.calls[index][0][-1]["content"]


class DictBackend:
    """A search backend over a dict of documents, with faults: exceptions per URL and slow URLs."""

    name = "dict"

    def __init__(
        self,
        docs: dict[str, Document],
        *,
        failures: dict[str, BaseException] | None = None,
        delays: dict[str, float] | None = None,
        default_delay: float = 0.0,
    ) -> None:
        self.docs = docs
        self.failures = failures or {}
        self.delays = delays or {}
        self.default_delay = default_delay
        self.opened: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def search(self, query: str, k: int = 10) -> list[Result]:
        words = set(query.lower().split())
        hits = [d for d in self.docs.values() if words & set(d.content.lower().split())]
        return [Result(d.title, d.url, d.content[:200]) for d in hits[:k]]

    async def open(self, url: str) -> Document:
        self.opened.append(url)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delays.get(url, self.default_delay))
            if url in self.failures:
                raise self.failures[url]
            if url not in self.docs:
                raise FetchError(f"HTTP 404 for {url}")
            return self.docs[url]
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None
