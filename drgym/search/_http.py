"""The shared client behind every live search provider: sessions, limits, retries, errors.

A provider subclass only says how to build its request and how to read its JSON; this base does the rest the
same way for all of them:

* one ``aiohttp.ClientSession`` per event loop, made lazily inside the running loop (the env's sync API runs
  on a private background loop while async users run on their own; each gets its own session);
* a :class:`~drgym.ratelimit.TokenBucket` (one per provider for every stack of a ``ToolServices``), one token
  per HTTP request;
* bounded retries (:class:`~drgym.retry.RetryPolicy`) on 429, 5xx, timeouts and dropped connections, honouring
  ``Retry-After``; other 4xx fail at once;
* typed errors naming the provider, and the API key kept out of every message and repr.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from drgym.document import Document
from drgym.errors import BackendError, ConfigError, FetchError, RateLimitedError, ToolError
from drgym.ratelimit import TokenBucket
from drgym.retry import Retryable, RetryPolicy, parse_retry_after, with_retries
from drgym.search.base import Result

__all__ = ["HttpSearchBackend", "LoopSessions", "PageOpener", "ProviderRequest", "clean_text"]

logger = logging.getLogger(__name__)

PageOpener = Callable[[str], Awaitable[Document]]
"""Reads the page behind a URL (the env wires the SSRF-safe fetcher and the extractor)."""

# Only things shaped like tags are removed, so a snippet saying "x < 5 and y > 3" keeps its text.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.DOTALL)
# Block-level tags separate words; inline ones (<b>, <strong>, <em>) sit inside them.
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|li|ul|ol|tr|td|th|h[1-6]|title|head|body|html|section|article|table|hr)\b[^<>]*>",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_ERROR_EXCERPT = 300


def clean_text(value: Any) -> str:
    """Plain text from a provider string: tags dropped, entities decoded, whitespace collapsed."""
    if not isinstance(value, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", _BLOCK_TAG.sub(" ", value)))).strip()


def _http_url(value: Any) -> str | None:
    if isinstance(value, str):
        url = value.strip()
        if url.lower().startswith(("http://", "https://")) and len(url) <= 4096:
            return url
    return None


@dataclass(frozen=True)
class ProviderRequest:
    """One HTTP request to a provider; ``headers`` may carry the key and are never logged."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class LoopSessions:
    """One ``aiohttp.ClientSession`` per event loop, created on first use inside that loop.

    A session is bound to the loop it was made in; reusing it from another loop fails in obscure ways. So each
    loop gets its own, and sessions whose loop has closed are dropped on the next use.
    """

    def __init__(self, factory: Callable[[], aiohttp.ClientSession]) -> None:
        self._factory = factory
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._lock = threading.Lock()

    def get(self) -> aiohttp.ClientSession:
        """The running loop's session (must be called inside a coroutine)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for other in [lp for lp in self._sessions if lp.is_closed()]:
                _discard(self._sessions.pop(other), other)
            session = self._sessions.get(loop)
            if session is None or session.closed:
                session = self._sessions[loop] = self._factory()
            return session

    async def aclose_current(self) -> None:
        """Close the running loop's session only (that loop is about to end; other loops keep theirs)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()

    async def aclose(self) -> None:
        """Close every session: the current loop's is awaited, the others are closed on their own loops.

        A session whose loop already ended without closing it cannot be closed cleanly any more (its sockets
        are freed when collected), so close sessions before their loop ends.
        """
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        with self._lock:
            sessions, self._sessions = self._sessions, {}
        for loop, session in sessions.items():
            if loop is current:
                await session.close()
            else:
                _discard(session, loop)


def _discard(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Close a session that belongs to another loop without awaiting it from here."""
    if session.closed:
        return
    if loop.is_running() and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(session.close(), loop)
        return
    # The loop is idle (its owner closes it next: its sockets close when it runs or ends) or gone with its
    # sockets; mark session and connector closed so nothing warns later.
    connector = session.connector
    session.detach()
    if connector is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            connector.close()


class HttpSearchBackend:
    """Base of the live search providers (Serper, Brave, Tavily, SearxNG).

    Subclasses set the class attributes and implement :meth:`_build_request` and :meth:`_parse`.

    Args:
        api_key: The provider key; defaults to the environment variable ``api_key_env``.
        base_url: Endpoint root (tests point it at a loopback server).
        rps: Requests per second for this backend (a ``ToolServices`` gives every env's backend one shared bucket).
        burst: Requests allowed at once after a quiet spell (default ``max(1, rps)``).
        timeout_s: Limit for one HTTP request, seconds.
        retry: Retry policy for 429/5xx/timeouts/connection errors.
        page_opener: Reads pages for :meth:`open`; without one ``open`` raises ``FetchError``.
        limiter: Take tokens from this bucket instead of one of the backend's own (shared quotas).
        queue_timeout_s: Longest wait for the rate limiter before the first attempt; ``None`` waits as long as
            needed (requests queue fairly behind each other).
        max_response_bytes: Larger responses are refused (a provider never sends megabytes of JSON).
        connector_limit: Concurrent connections to the provider.
    """

    name: ClassVar[str] = "http"
    api_key_env: ClassVar[str | None] = None
    base_url_env: ClassVar[str | None] = None
    default_base_url: ClassVar[str] = ""
    default_rps: ClassVar[float] = 5.0
    max_k: ClassVar[int] = 10

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        rps: float | None = None,
        burst: float | None = None,
        timeout_s: float = 20.0,
        retry: RetryPolicy | None = None,
        page_opener: PageOpener | None = None,
        limiter: TokenBucket | None = None,
        queue_timeout_s: float | None = 120.0,
        max_response_bytes: int = 5_000_000,
        connector_limit: int = 64,
    ) -> None:
        self._api_key = self._resolve_key(api_key)
        self.base_url = self._resolve_base_url(base_url)
        if not timeout_s > 0:
            raise ConfigError(f"{self.name}: timeout_s must be > 0, got {timeout_s!r}")
        if max_response_bytes < 1 or connector_limit < 1:
            raise ConfigError(f"{self.name}: max_response_bytes and connector_limit must be >= 1")
        self.timeout_s = float(timeout_s)
        self.retry = retry or RetryPolicy()
        self.page_opener = page_opener
        self.queue_timeout_s = queue_timeout_s
        self.max_response_bytes = max_response_bytes
        self._connector_limit = connector_limit
        self.limiter = limiter or TokenBucket(self.default_rps if rps is None else rps, burst)
        self._sessions = LoopSessions(self._new_session)

    # ----------------------------------------------------------------- configuration

    def _resolve_key(self, api_key: str | None) -> str:
        if self.api_key_env is None:
            return api_key or ""
        key = api_key if api_key is not None else os.environ.get(self.api_key_env, "")
        key = key.strip()
        if not key:
            raise ConfigError(
                f"{self.name}: no API key; set the environment variable {self.api_key_env} "
                f"(or pass api_key=...)"
            )
        return key

    def _resolve_base_url(self, base_url: str | None) -> str:
        url = (
            base_url
            or (os.environ.get(self.base_url_env, "") if self.base_url_env else "")
            or self.default_base_url
        )
        url = url.strip().rstrip("/")
        if not url:
            raise ConfigError(f"{self.name}: no base URL; set the environment variable {self.base_url_env}")
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"{self.name}: base URL must start with http:// or https://, got {url!r}")
        return url

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._connector_limit, limit_per_host=self._connector_limit, ttl_dns_cache=300
        )
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, connect=min(10.0, self.timeout_s))
        return aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers={"User-Agent": "drgym-search/0.1"}
        )

    def __repr__(self) -> str:
        # Never the key.
        return f"{type(self).__name__}(base_url={self.base_url!r}, rps={self.limiter.rate:g})"

    # ----------------------------------------------------------------- provider hooks

    def _build_request(self, query: str, k: int) -> ProviderRequest:
        raise NotImplementedError

    def _parse(self, payload: Any, k: int) -> list[Result]:
        raise NotImplementedError

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        return parse_retry_after(headers.get("Retry-After"))

    def _auth_hint(self) -> str:
        return f"check {self.api_key_env}" if self.api_key_env else "check the server's access settings"

    # ----------------------------------------------------------------- SearchBackend

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Up to ``k`` results for ``query`` (at most ``max_k``, the provider's own limit per request).

        Raises:
            ToolError: empty query.
            ConfigError: ``k`` < 1.
            BackendError: HTTP error, bad JSON or schema, or failures past the retry budget.
            RateLimitedError: the provider kept answering 429.
        """
        if not isinstance(query, str) or not query.strip():
            raise ToolError("empty search query: give some words to search for")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        k = min(k, self.max_k)
        request = self._build_request(query.strip(), k)
        payload = await self._request_json(request)
        try:
            results = self._parse(payload, k)
        except BackendError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackendError(
                f"{self.name}: unexpected response schema ({type(exc).__name__}: {exc})"
            ) from exc
        return self._finish(results, k)

    def _finish(self, results: list[Result], k: int) -> list[Result]:
        """Drop duplicate URLs, cut to ``k`` and number the results."""
        seen: set[str] = set()
        out: list[Result] = []
        for result in results:
            if result.url in seen:
                continue
            seen.add(result.url)
            extras = {"provider": self.name, **result.extras}
            extras.setdefault("position", len(out) + 1)
            out.append(Result(result.title or result.url, result.url, result.snippet, extras))
            if len(out) == k:
                break
        return out

    async def open(self, url: str) -> Document:
        """Read ``url`` with the injected page reader."""
        if self.page_opener is None:
            raise FetchError(f"no page reader configured for {self.name}: pass page_opener=... to read pages")
        return await self.page_opener(url)

    async def aclose(self) -> None:
        """Close the HTTP sessions of every event loop; safe to call twice."""
        await self._sessions.aclose()

    async def aclose_loop_session(self) -> None:
        """Close only the running loop's HTTP session, before that loop ends; the backend stays usable."""
        await self._sessions.aclose_current()

    # ----------------------------------------------------------------- HTTP

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def _request_json(self, request: ProviderRequest) -> Any:
        """Send ``request`` with rate limiting and retries; return the decoded JSON body."""
        try:
            await self.limiter.acquire(max_wait=self.queue_timeout_s)
        except RateLimitedError as exc:
            raise RateLimitedError(f"{self.name}: local {exc} (queue_timeout_s)") from None

        async def attempt(number: int, remaining: float) -> bytes:
            if number > 1:
                try:
                    remaining -= await self.limiter.acquire(max_wait=remaining)
                except RateLimitedError as exc:
                    raise RateLimitedError(
                        f"{self.name}: local {exc} (what is left of the retry budget)"
                    ) from None
            return await self._send(request, max(0.001, min(self.timeout_s, remaining)))

        try:
            body = await with_retries(attempt, self.retry, what=f"{self.name} search")
        except BackendError as exc:
            if self._api_key and self._api_key in str(exc):
                raise type(exc)(self._redact(str(exc))) from None
            raise
        return self._decode(body)

    async def _send(self, request: ProviderRequest, timeout_s: float) -> bytes:
        session = self._sessions.get()
        url = self.base_url + request.path
        try:
            async with session.request(
                request.method,
                url,
                params=request.params,
                json=request.json_body,
                headers=dict(request.headers),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after = self._retry_after(resp.headers)
                body = await self._read_capped(resp)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise Retryable(f"no answer within {timeout_s:.3g} s") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise Retryable(f"connection failed ({type(exc).__name__})") from exc
        if self.retry.is_retryable_status(status):
            detail = f"HTTP {status}" + (
                f", Retry-After {retry_after:g} s" if retry_after is not None else ""
            )
            raise Retryable(detail, retry_after=retry_after, rate_limited=status == 429)
        if status >= 300:
            raise BackendError(self._status_message(status, body))
        return body

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self.max_response_bytes:
            raise BackendError(f"{self.name}: response of {declared} bytes exceeds {self.max_response_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise BackendError(f"{self.name}: response exceeds {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_message(self, status: int, body: bytes) -> str:
        detail = _error_detail(body)
        if status in (401, 403):
            hint = f"the request was refused ({self._auth_hint()})"
        elif 300 <= status < 400:
            hint = "unexpected redirect (check base_url)"
        else:
            hint = "the provider rejected the request"
        text = f"{self.name}: HTTP {status}, {hint}" + (f": {detail}" if detail else "")
        return self._redact(text)

    def _decode(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            excerpt = self._redact(body[:80].decode("utf-8", "replace"))
            raise BackendError(
                f"{self.name}: response is not valid JSON ({exc}); it starts {excerpt!r}"
            ) from exc

    # ----------------------------------------------------------------- parsing helpers

    def _items(self, payload: Any, *path: str) -> list[Any]:
        """The list at ``payload[path[0]][path[1]]...``; a missing key gives ``[]``, a wrong type an error."""
        if not isinstance(payload, dict):
            raise BackendError(
                f"{self.name}: unexpected response schema: expected a JSON object, "
                f"got {type(payload).__name__}"
            )
        node: Any = payload
        for depth, key in enumerate(path):
            if not isinstance(node, dict):
                raise BackendError(
                    f"{self.name}: unexpected response schema: `{'.'.join(path[:depth])}` is not an object"
                )
            node = node.get(key)
            if node is None:
                return []
        if not isinstance(node, list):
            raise BackendError(
                f"{self.name}: unexpected response schema: `{'.'.join(path)}` is "
                f"{type(node).__name__}, expected a list"
            )
        return node

    def _result(
        self, item: Any, *, url_key: str, title_key: str, snippet_key: str, extras: Mapping[str, Any]
    ) -> Result | None:
        """A :class:`Result` from one provider item, or ``None`` when it has no usable http(s) URL."""
        if not isinstance(item, dict):
            return None
        url = _http_url(item.get(url_key))
        if url is None:
            return None
        kept = {key: value for key, value in extras.items() if value is not None}
        return Result(clean_text(item.get(title_key)), url, clean_text(item.get(snippet_key)), kept)


def _error_detail(body: bytes) -> str:
    """A short human message from an error body (JSON ``message``/``error``/``detail``, else text)."""
    text = body[:4096].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return clean_text(text)[:_ERROR_EXCERPT]
    for _ in range(3):
        if isinstance(data, dict):
            for key in ("message", "error", "detail", "msg"):
                if key in data:
                    data = data[key]
                    break
            else:
                break
    if isinstance(data, str):
        return clean_text(data)[:_ERROR_EXCERPT]
    return clean_text(json.dumps(data))[:_ERROR_EXCERPT]
