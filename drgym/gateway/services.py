"""What one gateway holds and every client shares: the search stack, the reader, the meter, limits, episodes.

:class:`GatewayServices` owns all of it, over a :class:`~drgym.services.ToolServices` of its own (the same owner
an in-process env uses), and nothing is process-wide: a test can run two gateways in one process and they share
nothing. Episode identity arrives with every request (an episode key, the record id, its own per-episode cap)
and is handed to the search stack as the same :class:`~drgym.search.episode.Episode` argument an in-process env
passes, so per-episode counts and budgets, and record-mode keys, work across any number of client processes.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drgym.browse import Browser, BrowsingAgent, EpisodeMemory, LexicalReader, Reader
from drgym.browse.base import PageNotes
from drgym.document import Document
from drgym.errors import ConfigError
from drgym.ratelimit import TokenBucket
from drgym.search.base import Result, SearchBackend
from drgym.search.episode import Episode, EpisodeUsage, EpisodeView, LimitedUsage, open_in, search_in
from drgym.search.metering import Budget, MeteredBackend
from drgym.search.stack import SearchConfig, new_stack
from drgym.services import ToolServices

__all__ = ["GatewayConfig", "GatewayServices"]

_SECRET_WORDS = ("key", "token", "secret", "password")


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's options; names follow the env's (``search``, ``corpus``, ``search_kwargs``, ``cache_*``).

    Attributes:
        search: A backend name, a failover chain of names, or a ``SearchBackend`` instance.
        corpus: Corpus of the ``local`` and ``miniweb`` backends.
        search_kwargs: Options of the named backend (for a chain: ``{name: {...}}``).
        rps: Upstream requests per second for all clients together (retries included); ``None``: the
            providers' own defaults.
        burst: Upstream requests allowed at once after a quiet spell (default ``max(1, rps)``).
        budget_global: Provider calls all clients may make together.
        budget_per_episode: Provider calls one episode may make (a client may ask for less, never more).
        cache_path / cache_mode / cache_ttl_s: The store, as for the env (``read-write``, ``record``, ``replay``).
        reader: How the gateway reads pages for ``/v1/browse``: ``"lexical"`` or an LLM spec.
        max_episodes: Episodes whose counts are remembered (least recently used forgotten first).
        max_browse_s: Longest page-read time budget a client may ask for.
    """

    search: str | tuple[str, ...] | SearchBackend = "local"
    corpus: str | None = None
    search_kwargs: Mapping[str, Any] = field(default_factory=dict)
    rps: float | None = None
    burst: float | None = None
    budget_global: int | None = None
    budget_per_episode: int | None = None
    cache_path: str | None = None
    cache_mode: str | None = None
    cache_ttl_s: float | None = 7 * 24 * 3600.0
    reader: str | Reader | None = None
    max_episodes: int = 100_000
    max_browse_s: float = 300.0

    def __post_init__(self) -> None:
        if self.rps is not None and not (isinstance(self.rps, (int, float)) and self.rps > 0):
            raise ConfigError(f"`rps` must be a positive number of requests per second, got {self.rps!r}")
        if not isinstance(self.max_episodes, int) or self.max_episodes < 1:
            raise ConfigError(f"`max_episodes` must be a positive integer, got {self.max_episodes!r}")


class GatewayServices:
    """The search stack, reader, meter, limiter and per-episode records of one gateway.

    Args:
        config: What to build.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.tools = ToolServices()
        self.meter = self.tools.meter
        self.limiter = TokenBucket(config.rps, config.burst) if config.rps is not None else None
        self.budget = Budget(per_episode=config.budget_per_episode, global_=config.budget_global)
        self.stack = self._build_stack(config)
        self.reader = _make_reader(config.reader)
        self._episodes: OrderedDict[str, EpisodeUsage] = OrderedDict()
        self._secrets = _secrets_of(config.search_kwargs)
        self.started = time.time()

    @property
    def name(self) -> str:
        return self.stack.name

    def _build_stack(self, config: GatewayConfig) -> SearchBackend:
        search: Any = config.search
        kwargs = dict(config.search_kwargs)
        if isinstance(search, str) and search == "miniweb" and config.rps is not None:
            kwargs.setdefault("search_rps", config.rps)  # the mini-web client keeps its own bucket
        if not isinstance(search, (str, tuple)):
            # An instance: meter and budget it here (the stack builder wraps only named providers).
            search = MeteredBackend(search, self.meter, self.budget)
        stack = new_stack(
            SearchConfig(
                search=search,
                corpus=config.corpus,
                search_kwargs=kwargs,
                cache_path=config.cache_path,
                cache_mode=config.cache_mode,
                cache_ttl_s=config.cache_ttl_s,
            ),
            self.tools,
            limiter=self.limiter,
            budget=self.budget,
        )
        return stack

    # ------------------------------------------------------------------ episodes

    def episode(self, key: str, limit: int | None, record_id: str | None = None) -> Episode:
        """Episode ``key`` of this request: its counts (kept per key, the least recently used forgotten first)
        and the record id the request names."""
        usage = self._episodes.get(key)
        if usage is None:
            usage = self._episodes[key] = LimitedUsage(limit=limit)
            while len(self._episodes) > self.config.max_episodes:
                self._episodes.popitem(last=False)
        else:
            self._episodes.move_to_end(key)
        return Episode(record_id=record_id, usage=usage)

    # ------------------------------------------------------------------ tools

    async def search(
        self, query: str, k: int, *, episode: str, record_id: str | None, limit: int | None
    ) -> tuple[list[Result], EpisodeUsage]:
        ep = self.episode(episode, limit, record_id)
        return await search_in(self.stack, query, k, ep), ep.usage

    async def open(
        self, url: str, *, episode: str, record_id: str | None, limit: int | None
    ) -> tuple[Document, EpisodeUsage]:
        ep = self.episode(episode, limit, record_id)
        return await open_in(self.stack, url, ep), ep.usage

    async def browse(
        self,
        urls: Sequence[str],
        *,
        question: str,
        subquestions: Mapping[str, str],
        memory: Sequence[tuple[str, str]],
        memory_chars: int,
        max_pages: int,
        time_budget_s: float,
        episode: str,
        record_id: str | None,
        limit: int | None,
    ) -> tuple[list[PageNotes], list[tuple[str, str]], EpisodeUsage]:
        """Open and read ``urls`` with the gateway's reader; returns the notes and what was added to memory."""
        ep = self.episode(episode, limit, record_id)
        mem = EpisodeMemory(memory_chars)
        for url, text in memory:
            mem.add(url, text)
        mark = mem.mark()
        browser = Browser(
            EpisodeView(self.stack, ep), self.reader, max_pages_per_call=max_pages, time_budget_s=time_budget_s
        )
        pages = await browser.browse(urls, question=question, subquestions=subquestions, memory=mem)
        added = [(url, text) for url in mem.urls() if (text := mem.notes_for(url, since=mark))]
        return pages, added, ep.usage

    # ------------------------------------------------------------------ hygiene

    def redact(self, text: str) -> str:
        """``text`` with every configured secret (API keys, tokens) replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def add_secret(self, secret: str | None) -> None:
        if secret:
            self._secrets.append(secret)

    async def aclose(self) -> None:
        """Close the stack (flushing its store), the services under it and the reader's model client."""
        try:
            try:
                await self.stack.aclose()
            finally:
                await self.tools.aclose()
        finally:
            if isinstance(self.reader, BrowsingAgent):
                close = getattr(self.reader.client, "aclose", None)  # ChatClient does not require one
                if close is not None:
                    await close()


def _make_reader(reader: str | Reader | None) -> Reader:
    if reader is None or reader == "lexical":
        return LexicalReader()
    if isinstance(reader, str):
        from drgym.llm import make_client

        return BrowsingAgent(make_client(reader))
    return reader


def _secrets_of(options: Mapping[str, Any]) -> list[str]:
    """Values of options named like secrets, nested chains included, and the providers' key variables."""
    found: list[str] = []
    stack: list[Mapping[str, Any]] = [options]
    while stack:
        current = stack.pop()
        for name, value in current.items():
            if isinstance(value, Mapping):
                stack.append(value)
            elif isinstance(value, str) and len(value) >= 4 and any(w in str(name).lower() for w in _SECRET_WORDS):
                found.append(value)
    found.extend(v for n, v in os.environ.items() if n.endswith("_API_KEY") and len(v) >= 4)
    return found
