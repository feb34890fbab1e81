"""The client side of ``drgym serve``: a ``SearchBackend`` whose searches, page opens and page reads run there.

``WebResearchEnv(search="gateway:http://HOST:PORT")`` gets a :class:`GatewayBackend` from its
``ToolServices`` (one per URL and options: one HTTP session per event loop for every env given those services);
so does passing one as ``search=``. Each episode gets a :class:`GatewayEpisode` (its own key, its record id and per-episode cap sent with every
request, its counts copied back from the gateway's answers) and, unless the env names its own reader, a
:class:`GatewayBrowser` that has the gateway open *and read* the pages.

A gateway that is restarting is retried with bounded backoff (:mod:`drgym.retry`: connection refused or
dropped, 502/503/504); one that stays down past the retry budget raises :class:`~drgym.errors.BackendError`,
which the env turns into an error observation. Tool errors come back as the same :mod:`drgym.errors` class an
in-process env would raise.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import resource
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from drgym.browse.base import PageNotes
from drgym.browse.memory import EpisodeMemory
from drgym.document import Document
from drgym.errors import BackendError, ConfigError
from drgym.gateway import wire
from drgym.retry import Retryable, RetryPolicy, parse_retry_after, with_retries
from drgym.search._http import LoopSessions
from drgym.search.base import Result
from drgym.search.metering import EpisodeUsage

__all__ = ["DEFAULT_RETRY", "GatewayBackend", "GatewayBrowser", "GatewayEpisode", "default_connector_limit"]

DEFAULT_RETRY = RetryPolicy(
    max_attempts=12, base_delay=0.25, max_delay=4.0, max_total_s=60.0, retry_statuses=frozenset({502, 503, 504})
)
"""Long enough to ride out a gateway restart (a few seconds), short enough that a dead one ends the turn."""

_PAGES_AT_ONCE = 4  # the gateway's Browser reads this many pages of one call at a time


class GatewayBackend:
    """A search backend served by a ``drgym serve`` gateway.

    Args:
        url: The gateway's base URL, ``http://HOST:PORT``.
        token: The gateway's shared token; default ``DRGYM_GATEWAY_TOKEN``.
        timeout_s: Longest a search or open request may take once sent (a browse request gets its time
            budget on top): time queued at a busy gateway and the waits it asks for (HTTP 503 with
            ``Retry-After`` when its queue is full) count; waiting for one of this process's own connections
            does not. Past it the call is a ``BackendError`` (an error observation).
        retry: How a gateway that is down or restarting is retried.
        budget_per_episode: Provider calls one episode may make (the gateway's own cap applies too).
        connector_limit: Connections to the gateway at once, per event loop (default: 4096, or half the
            process's open-file limit if that is lower). Requests past it wait for a free connection (not
            counted against ``timeout_s``). Keep it above the requests a process has in flight: page reads
            queued at a busy gateway hold their connections, and a search that finds none free waits behind
            them in the client instead of in the gateway's own search lane.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
        budget_per_episode: int | None = None,
        connector_limit: int | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.strip().lower().startswith(("http://", "https://")):
            raise ConfigError(f'gateway URL must look like "http://HOST:PORT", got {url!r}')
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ConfigError(f"gateway timeout_s must be a positive number, got {timeout_s!r}")
        if budget_per_episode is not None and (isinstance(budget_per_episode, bool) or budget_per_episode < 0):
            raise ConfigError(f"budget_per_episode must be None or an integer >= 0, got {budget_per_episode!r}")
        if connector_limit is None:
            connector_limit = default_connector_limit()
        if isinstance(connector_limit, bool) or not isinstance(connector_limit, int) or connector_limit < 1:
            raise ConfigError(f"gateway connector_limit must be a positive integer, got {connector_limit!r}")
        self.url = url.strip().rstrip("/")
        self.name = "gateway"
        self._token = token if token is not None else os.environ.get(wire.TOKEN_ENV) or None
        self.timeout_s = float(timeout_s)
        self.retry = retry or DEFAULT_RETRY
        self.budget_per_episode = budget_per_episode
        self._connector_limit = connector_limit
        self._sessions = LoopSessions(self._new_session)
        self._client = uuid.uuid4().hex[:16]
        self._counter = itertools.count()
        self._default: GatewayEpisode | None = None

    def __repr__(self) -> str:  # never the token
        return f"GatewayBackend({self.url!r})"

    # ------------------------------------------------------------------ episodes

    def episode_view(self, record_id: str | None = None) -> GatewayEpisode:
        """A new episode on the gateway (its own counts and per-episode budget there; ``record_id``: its record key)."""
        return GatewayEpisode(self, f"{self._client}-{next(self._counter)}", record_id)

    def browser(self, view: GatewayEpisode, *, max_pages_per_call: int, time_budget_s: float) -> GatewayBrowser:
        """The browse tool of ``view``'s episode, with pages opened and read on the gateway."""
        return GatewayBrowser(view, max_pages_per_call=max_pages_per_call, time_budget_s=time_budget_s)

    # ------------------------------------------------------------------ SearchBackend

    def _outside(self) -> GatewayEpisode:
        if self._default is None:
            self._default = self.episode_view()
        return self._default

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Search through the gateway, counted against an episode of this backend's own."""
        return await self._outside().search(query, k)

    async def open(self, url: str) -> Document:
        """Open a page through the gateway (fetched and extracted there, behind its SSRF guard)."""
        return await self._outside().open(url)

    async def health(self) -> dict[str, Any]:
        """The gateway's ``/health`` answer (one attempt; raises ``BackendError`` when it is down)."""
        session = self._sessions.get()
        try:
            async with session.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                return await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BackendError(f"gateway {self.url} is not answering ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        """Close the HTTP sessions of every event loop; safe to call twice."""
        await self._sessions.aclose()

    # ------------------------------------------------------------------ HTTP

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._connector_limit, limit_per_host=self._connector_limit)
        headers = {"User-Agent": "drgym-gateway-client/0.1"}
        if self._token:
            headers[wire.TOKEN_HEADER] = f"Bearer {self._token}"
        return aiohttp.ClientSession(connector=connector, headers=headers)

    async def post(self, endpoint: str, payload: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
        """POST ``payload`` to ``/v1/<endpoint>``; returns the answer or raises the error it reports.

        A gateway at capacity (503 ``Busy`` with ``Retry-After``) is waited out and asked again until
        ``timeout_s`` has passed; a gateway that is down or restarting is retried by :attr:`retry`.
        """
        url = f"{self.url}{wire.API_PREFIX}/{endpoint}"
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit

        async def attempt(number: int, remaining: float) -> Any:
            session = self._sessions.get()
            left = max(0.001, deadline - time.monotonic())
            # No total/connect limit: waiting for a pooled connection is this process's own queue. sock_read is
            # the time the gateway takes to answer a request it has (its queue included).
            timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=30.0, sock_read=left)
            try:
                async with session.post(url, json=payload, timeout=timeout) as resp:
                    status = resp.status
                    if status == 503 and resp.headers.get("Retry-After") is not None:
                        data = await resp.json(content_type=None)
                        error = data.get("error") if isinstance(data, dict) else None
                        if isinstance(error, dict) and error.get("type") == wire.BUSY:
                            raise _Busy(parse_retry_after(resp.headers.get("Retry-After")) or 1.0)
                    if status in self.retry.retry_statuses:
                        raise Retryable(f"HTTP {status}")
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        raise BackendError(f"gateway {endpoint}: HTTP {status} with a body that is not JSON") from None
            except (asyncio.TimeoutError, TimeoutError):
                raise BackendError(f"gateway {endpoint}: no answer within {limit:g} s (timeout_s)") from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise Retryable(f"connection failed ({type(exc).__name__})") from exc
            error = data.get("error") if isinstance(data, dict) else None
            if status != 200:
                message = error.get("message") if isinstance(error, dict) else None
                raise BackendError(f"gateway {endpoint}: HTTP {status}: {message or 'refused'}")
            if error is not None:
                wire.raise_error(error)
            return data

        waits = 0
        while True:
            try:
                return await with_retries(attempt, self.retry, what=f"gateway {endpoint} at {self.url}")
            except _Busy as busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendError(
                        f"gateway {endpoint}: the gateway stayed at capacity for {limit:g} s (timeout_s; it "
                        f"answered 503 Busy {waits + 1} times)"
                    ) from None
                waits += 1
                # Spread the clients a full queue turned away over a quarter more than it asked for.
                await asyncio.sleep(min(left, busy.retry_after_s * (1.0 + 0.25 * random.random())))


class _Busy(Exception):
    """The gateway's queue is full: wait ``retry_after_s`` and send again (not a failed attempt)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"gateway busy; retry after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


def default_connector_limit() -> int:
    """4096 connections, or half the open-file limit of this process when that is lower (at least 64)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - every POSIX system has it
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(64, min(4096, soft // 2))


class GatewayEpisode:
    """One episode's handle on a gateway: its key, record id and cap go with each request; counts come back."""

    def __init__(self, backend: GatewayBackend, key: str, record_id: str | None = None) -> None:
        self.backend = backend
        self.key = key
        self.record_id = record_id
        self.name = backend.name
        self.usage = EpisodeUsage()

    def identity(self) -> dict[str, Any]:
        """The episode fields of a request."""
        return {
            "episode": self.key,
            "record_id": self.record_id,
            "budget_per_episode": self.backend.budget_per_episode,
        }

    def _count(self, data: Mapping[str, Any]) -> None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            wire.usage_from_json(usage, self.usage)

    async def search(self, query: str, k: int = 10) -> list[Result]:
        data = await self.backend.post("search", {"query": query, "k": k, **self.identity()})
        self._count(data)
        return [wire.result_from_json(r) for r in data["results"]]

    async def open(self, url: str) -> Document:
        data = await self.backend.post("open", {"url": url, **self.identity()})
        self._count(data)
        return wire.document_from_json(data["document"])

    async def aclose(self) -> None:
        """Nothing to release: the backend outlives the episode."""


class GatewayBrowser:
    """The ``browse_webpage`` tool with pages opened and read on the gateway (same contract as ``Browser``).

    Every failure, the gateway's included, becomes the pages' ``error``: one call never raises.
    """

    def __init__(self, view: GatewayEpisode, *, max_pages_per_call: int, time_budget_s: float) -> None:
        self.view = view
        self.max_pages_per_call = max_pages_per_call
        self.time_budget_s = time_budget_s

    async def browse(
        self,
        urls: Sequence[str],
        *,
        question: str,
        subquestions: Mapping[str, str],
        memory: EpisodeMemory,
    ) -> list[PageNotes]:
        unique = list(dict.fromkeys(url.strip() for url in urls))
        rounds = math.ceil(min(len(unique), self.max_pages_per_call) / _PAGES_AT_ONCE) or 1
        payload = {
            "urls": unique,
            "question": question,
            "subquestions": {u: subquestions.get(u, "") for u in unique},
            "memory": [[u, memory.notes_for(u)] for u in memory.urls()],
            "memory_chars": memory.max_chars,
            "max_pages": self.max_pages_per_call,
            "time_budget_s": self.time_budget_s,
            **self.view.identity(),
        }
        try:
            data = await self.view.backend.post(
                "browse", payload, timeout_s=self.view.backend.timeout_s + rounds * self.time_budget_s
            )
        except Exception as exc:  # noqa: BLE001  (the gateway's failure is every page's error)
            message = str(exc) or type(exc).__name__
            return [PageNotes(u, "", "", 0, 0, error=message) for u in unique]
        self.view._count(data)
        for url, text in data.get("memory_added") or []:
            memory.add(url, text)
        return [wire.notes_from_json(p) for p in data["pages"]]
