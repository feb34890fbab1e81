"""The safe web fetcher: policy-chosen URLs at training scale without being exploited, stalled or banned.

One :class:`Fetcher` serves every episode of a process. It shares a single ``aiohttp`` session (made lazily
on the running loop, remade if used from another loop), bounds every request in time and size, sends an
honest user agent, limits request rate and concurrency per host, and runs every URL, every redirect hop and
every DNS answer through the SSRF guard (:mod:`drgym.web.ssrf`). It reads only what can become text (HTML,
plain text, XML/JSON, and PDF through pypdf), refusing images, audio, video and archives from the response
headers without downloading their bodies. Bodies are decompressed incrementally under a hard output cap, so a
decompression bomb costs at most ``max_decompressed_bytes`` of memory.

Failures raise typed errors the environment turns into observations: :class:`~drgym.errors.FetchError`
(network, timeout, HTTP status, redirects), :class:`~drgym.errors.BlockedURLError` (SSRF guard,
robots.txt) and :class:`~drgym.errors.UnsupportedContentError` (unreadable content type).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from drgym.errors import (
    BlockedURLError,
    ConfigError,
    DrgymError,
    FetchError,
    RateLimitedError,
    UnsupportedContentError,
)
from drgym.ratelimit import KeyedRateLimiter
from drgym.retry import parse_retry_after
from drgym.web.charset import decode_text
from drgym.web.pdf import extract_pdf_text, require_pypdf
from drgym.web.robots import RobotsCache
from drgym.web.ssrf import DEFAULT_ALLOWED_PORTS, PinnedResolver, SSRFGuard

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DEFAULT_CONTENT_TYPES",
    "DEFAULT_USER_AGENT",
    "FetchConfig",
    "Fetcher",
    "HTTPStatusError",
    "Page",
]

logger = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "drgym/0.1 (+https://github.com/drgym/drgym)"

DEFAULT_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "text/plain",
        "text/markdown",
        "text/x-markdown",
        "text/csv",
        "text/xml",
        "application/xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/json",
        "application/ld+json",
        "application/pdf",
    }
)

_PDF = "application/pdf"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_CHUNK = 64 * 1024
_SNIFF_BYTES = 1024
_THREAD_DECODE_BYTES = 512 * 1024  # decode bigger bodies in a worker thread
_ROBOTS_MAX_BYTES = 512 * 1024  # the size Google reads of a robots.txt

# Signatures of formats that are never text, whatever the Content-Type says.
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"ID3", "audio/mpeg"),
    (b"OggS", "application/ogg"),
    (b"\x1aE\xdf\xa3", "video/webm"),
    (b"\x7fELF", "application/x-executable"),
)


@functools.lru_cache(maxsize=1)
def _brotli_bounded() -> bool:
    """Whether brotli output can be capped (``output_buffer_limit``, brotli >= 1.2); only then ask for br."""
    try:
        import brotli
    except ImportError:
        return False
    try:
        brotli.Decompressor().process(b"", output_buffer_limit=1)
    except TypeError:
        return False
    except brotli.error:
        return True
    return True


@dataclass(frozen=True)
class FetchConfig:
    """Every limit of the fetcher. Times are seconds, sizes bytes; defaults suit RL training on the web."""

    user_agent: str = DEFAULT_USER_AGENT
    """Sent on every request; honest and with a contact URL so site owners can reach the project."""
    accept_language: str | None = "en-US,en;q=0.8"
    """``Accept-Language`` header (None to omit); the questions are English."""
    connect_timeout: float = 10.0
    """TCP connect plus TLS handshake, per connection attempt."""
    read_timeout: float = 20.0
    """Longest silence between two reads from the socket."""
    total_timeout: float = 30.0
    """Hard bound on one ``fetch`` call, all of it: rate-limit wait, robots.txt, redirects, retries, body and
    PDF extraction. A slow-drip server that defeats ``read_timeout`` is stopped here."""
    max_bytes: int = 4 * 1024 * 1024
    """Most body bytes read from the wire. Reading stops at the cap and the part read is kept
    (``Page.truncated``): the start of a huge page is still useful, and the rest is never downloaded."""
    max_decompressed_bytes: int = 10 * 1024 * 1024
    """Most bytes a gzip/deflate/br body may inflate to; decompression stops there (``Page.truncated``)."""
    max_redirects: int = 5
    """Redirect hops followed; one more is an error. Every hop is re-checked by the SSRF guard."""
    max_connections: int = 256
    """Open connections in total (``TCPConnector(limit=...)``)."""
    max_connections_per_host: int = 8
    """Concurrent connections to one host (``TCPConnector(limit_per_host=...)``)."""
    per_host_rate: float | None = 2.0
    """Requests per second to one host (token bucket, every redirect hop counts); None disables."""
    per_host_burst: float | None = 4.0
    """Requests one host may receive at once after a quiet spell."""
    max_retries: int = 1
    """Extra attempts after a connection failure or a 429/502/503/504 (never after a timeout)."""
    retry_backoff: float = 0.5
    """Wait before retry ``n`` is ``retry_backoff * 2**n`` unless the server sent ``Retry-After``."""
    max_retry_after: float = 5.0
    """A ``Retry-After`` longer than this is not waited for: the fetch fails at once instead."""
    respect_robots: bool = False
    """Check robots.txt before every request (off: single pages read for research, not crawling)."""
    robots_ttl: float = 3600.0
    """How long a host's robots.txt is cached."""
    allow_hosts: frozenset[str] = frozenset()
    """Host names, IP addresses or CIDR networks exempt from the SSRF address and port checks; the only way
    around the guard (e.g. ``{"127.0.0.1"}`` for a local test server, ``{"10.0.0.0/8"}`` for an intranet)."""
    allow_private: bool = False
    """Turn the SSRF address checks off altogether (trusted networks only)."""
    allowed_ports: frozenset[int] | None = DEFAULT_ALLOWED_PORTS
    """Ports a URL may name unless its host is allow-listed; None allows all. The default (80, 443, 8080,
    8443) covers public sites and keeps internal services on other ports out of reach."""
    max_url_length: int = 2048
    """Longest URL accepted."""
    allowed_content_types: frozenset[str] = DEFAULT_CONTENT_TYPES
    """MIME types read; anything else is refused from the headers without downloading the body. A missing
    Content-Type is sniffed from the first bytes."""
    pdf_max_pages: int = 50
    """Pages of a PDF whose text is extracted."""

    def __post_init__(self) -> None:
        for name in ("allow_hosts", "allowed_content_types"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"{name} must be a collection of strings, not the string {value!r}")
            object.__setattr__(self, name, frozenset(str(v).lower() for v in value))
        if self.allowed_ports is not None:
            object.__setattr__(self, "allowed_ports", frozenset(int(p) for p in self.allowed_ports))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _POSITIVE and value is not None and not _positive(value):
                raise ConfigError(f"FetchConfig.{f.name} must be a positive number, got {value!r}")
            if f.name in _NON_NEGATIVE and not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(f"FetchConfig.{f.name} must be >= 0, got {value!r}")
        burst = self.per_host_burst
        if burst is not None and not (_positive(burst) and burst >= 1):
            raise ConfigError(f"FetchConfig.per_host_burst must be a number >= 1, got {burst!r}")
        if not self.user_agent or not self.user_agent.isprintable():
            raise ConfigError(
                f"FetchConfig.user_agent must be a printable, non-empty string, got {self.user_agent!r}"
            )


_POSITIVE = {
    "connect_timeout", "read_timeout", "total_timeout", "max_bytes", "max_decompressed_bytes",
    "max_connections", "max_connections_per_host", "per_host_rate", "max_url_length", "robots_ttl",
    "pdf_max_pages",
}
_NON_NEGATIVE = {"max_redirects", "max_retries", "retry_backoff", "max_retry_after"}


def _positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Page:
    """A fetched page, decoded to text.

    Attributes:
        url: The final URL, after redirects.
        status: HTTP status of the final response.
        content_type: MIME type (from the header, or sniffed when it was missing), e.g. ``"text/html"``.
        charset: Codec used to decode the body; None for PDF.
        text: The decoded body (HTML source, plain text...), or the extracted text of a PDF.
        raw_bytes_len: Body bytes received on the wire (compressed size).
        truncated: The body hit ``max_bytes`` or ``max_decompressed_bytes`` (or the connection dropped
            mid-body) and ``text`` is its beginning.
        redirects: URLs that answered with a redirect, in order (the requested URL first); empty if none.
        elapsed_s: Wall time of the whole fetch.
    """

    url: str
    status: int
    content_type: str
    charset: str | None
    text: str
    raw_bytes_len: int
    truncated: bool
    redirects: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


class HTTPStatusError(FetchError):
    """The server answered with HTTP status >= 400 (after retries); ``status`` holds it."""

    def __init__(self, message: str, *, status: int, url: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.retry_after = retry_after


# ---------------------------------------------------------------------------------------------- decoding


class _Inflater:
    """One content-coding stage (gzip, deflate or br) whose output per call never exceeds a limit."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.capped = False
        self._started = False
        if coding == "br":
            import brotli

            self._br = brotli.Decompressor()
            self._error: type[Exception] = brotli.error
        else:
            self._error = zlib.error
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decompress ``data``; return at most ``limit`` bytes, setting ``capped`` if more output was due."""
        if limit <= 0:
            self.capped = self.capped or bool(data)
            return b""
        try:
            out = self._feed_br(data, limit) if self.coding == "br" else self._feed_zlib(data, limit)
        except self._error as exc:
            raise _CorruptBody(f"corrupt {self.coding} body: {exc}") from exc
        self._started = self._started or bool(out)
        if len(out) > limit:
            self.capped = True
            out = out[:limit]
        return out

    def _feed_zlib(self, data: bytes, limit: int) -> bytes:
        z = self._z
        if z.eof:
            if self.coding != "gzip" or not (z.unused_data + data).strip(b"\0"):
                return b""
            # A gzip body may hold several members; each continues the text.
            pending, self._z = z.unused_data + data, zlib.decompressobj(16 + zlib.MAX_WBITS)
            return self._feed_zlib(pending, limit)
        try:
            out = z.decompress(data, limit)
        except zlib.error:
            if self.coding != "deflate" or self._started:
                raise
            # "deflate" is often sent raw (no zlib header): retry the same bytes as raw deflate.
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            self._started = True
            out = self._z.decompress(data, limit)
        if self._z.unconsumed_tail:
            self.capped = True
        return out

    def _feed_br(self, data: bytes, limit: int) -> bytes:
        br = self._br
        if br.is_finished():
            return b""
        parts = [br.process(data, output_buffer_limit=limit)]
        size = len(parts[0])
        while size < limit and not br.can_accept_more_data():
            more = br.process(b"", output_buffer_limit=limit - size)
            if not more:
                break
            parts.append(more)
            size += len(more)
        if size >= limit and not br.can_accept_more_data():
            self.capped = True
        return b"".join(parts)


class _CorruptBody(Exception):
    """Internal: a compressed body failed to decode."""


class _BodyDecoder:
    """The chain of content codings of one response, bounded by ``max_decompressed_bytes`` overall."""

    def __init__(self, codings: list[str], limit: int) -> None:
        self._stages = [_Inflater(c) for c in reversed(codings)]  # the last coding applied is undone first
        self._limit = limit
        self.produced = 0
        self.capped = False

    def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            data = stage.feed(data, self._limit - self.produced)
            self.capped = self.capped or stage.capped
        room = self._limit - self.produced
        if len(data) > room:
            data, self.capped = data[:room], True
        self.produced += len(data)
        return data


def _parse_codings(header: str | None) -> list[str]:
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
    codings = ["gzip" if c == "x-gzip" else c for c in codings if c != "identity"]
    for coding in codings:
        if coding not in ("gzip", "deflate", "br") or (coding == "br" and not _brotli_bounded()):
            raise UnsupportedContentError(f"content encoding {coding!r} is not supported")
    return codings


def _parse_content_type(header: str | None) -> tuple[str, str | None]:
    """Split ``text/html; charset=UTF-8`` into ``("text/html", "UTF-8")``; ``("", None)`` when absent."""
    if not header:
        return "", None
    mime, _, rest = header.partition(";")
    charset = None
    for param in rest.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return mime.strip().lower(), charset


def _sniff(head: bytes, declared: str = "") -> str | None:
    """A MIME type for bytes that are clearly not text (or are a PDF), else None.

    Magic numbers count whatever the header says; NUL bytes only when the server declared no type (a page
    declared as text with a stray NUL, or UTF-16 without a BOM, is still decoded).
    """
    if head.startswith(b"%PDF-"):
        return _PDF
    for magic, mime in _BINARY_MAGIC:
        if head.startswith(magic):
            return mime
    sample = head[:_SNIFF_BYTES]
    utf16 = sample.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not declared and not utf16 and b"\0" in sample:
        return "application/octet-stream"
    return None


def _is_markup(mime: str) -> bool:
    return "html" in mime or "xml" in mime


# ----------------------------------------------------------------------------------------------- fetcher


@dataclass
class _LoopState:
    """Everything bound to one event loop: the session, its connector and the pinning resolver."""

    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    resolver: PinnedResolver


@dataclass
class _Body:
    data: bytes
    raw_len: int
    truncated: bool


class Fetcher:
    """Fetch web pages safely; one instance serves many concurrent episodes.

    Use as ``async with Fetcher(config) as fetcher: page = await fetcher.fetch(url)``, or call
    :meth:`aclose` when done. After ``aclose`` the fetcher can still be used: it opens a new session.

    Args:
        config: Limits and policy; defaults to :class:`FetchConfig()`.
    """

    def __init__(self, config: FetchConfig | None = None) -> None:
        self.config = cfg = config or FetchConfig()
        self._guard = SSRFGuard(
            cfg.allow_hosts,
            allow_private=cfg.allow_private,
            allowed_ports=cfg.allowed_ports,
            max_url_length=cfg.max_url_length,
        )
        self._limiter = (
            KeyedRateLimiter(cfg.per_host_rate, cfg.per_host_burst) if cfg.per_host_rate is not None else None
        )
        self._robots = (
            RobotsCache(self._fetch_robots_text, cfg.user_agent, ttl_s=cfg.robots_ttl)
            if cfg.respect_robots
            else None
        )
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        encodings = "gzip, deflate, br" if _brotli_bounded() else "gzip, deflate"
        self._headers = {
            "User-Agent": cfg.user_agent,
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,text/plain;q=0.8,"
            "application/pdf;q=0.7,*/*;q=0.1",
            "Accept-Encoding": encodings,
        }
        if cfg.accept_language:
            self._headers["Accept-Language"] = cfg.accept_language

    @property
    def guard(self) -> SSRFGuard:
        """The SSRF guard this fetcher applies (to check URLs up front, e.g. before queueing them)."""
        return self._guard

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the sessions (one per event loop that used this fetcher) and their connections."""
        states = list(self._states.values())
        self._states.clear()
        for state in states:
            await _close_state(state)

    def _loop_state(self) -> _LoopState:
        """The session of the running loop, made on first use.

        The env's synchronous API runs on a private background loop while async callers use their own, so a
        fetcher may serve several live loops; each gets its own session (aiohttp sessions are bound to one
        loop). States of loops that have been closed are dropped here; close the fetcher before closing a loop
        to release its sockets promptly.
        """
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is not None and not state.session.closed:
            return state
        for other, old in list(self._states.items()):  # a snapshot: another thread's loop may add one
            if other.is_closed() and self._states.pop(other, None) is not None:
                _discard_state(old)
        cfg = self.config
        resolver = PinnedResolver(self._guard)
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections,
            limit_per_host=cfg.max_connections_per_host,
            resolver=resolver,
            use_dns_cache=False,  # the resolver's pins are the cache: only checked addresses are ever used
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=cfg.total_timeout, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout
            ),
            headers=self._headers,
            auto_decompress=False,  # bodies are inflated here, under a cap
            # Fetches share no state; cookies set on a redirect are carried within that one fetch.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # a proxy from the environment would bypass the pinned resolver
            max_line_size=16384,
            max_field_size=16384,
        )
        self._states[loop] = state = _LoopState(loop, session, resolver)
        return state

    async def fetch(self, url: str) -> Page:
        """Fetch ``url`` and return it decoded.

        Raises:
            BlockedURLError: The SSRF guard refused the URL or a redirect hop, or robots.txt disallows it.
            UnsupportedContentError: The content type is not readable text (decided from the headers).
            HTTPStatusError: The final status was >= 400 (a :class:`FetchError`; the message has the status).
            FetchError: Timeout, connection failure, DNS failure, too many redirects, corrupt body.
        """
        return await self._fetch_bounded(url, check_robots=self._robots is not None, max_bytes=None)

    async def _fetch_bounded(self, url: str | URL, *, check_robots: bool, max_bytes: int | None) -> Page:
        start = time.monotonic()
        total = self.config.total_timeout
        try:
            return await asyncio.wait_for(self._fetch(url, start, check_robots, max_bytes), total)
        except asyncio.TimeoutError:
            raise FetchError(f"timed out after {total:g} s (total_timeout) fetching {_short(url)}") from None

    async def _fetch(self, url: str | URL, start: float, check_robots: bool, max_bytes: int | None) -> Page:
        state = self._loop_state()
        deadline = start + self.config.total_timeout
        current = await state.resolver.check(url)
        redirects: list[str] = []
        seen = {(str(current), "[]")}  # (URL, cookies sent): the same pair twice is a loop
        cookies: dict[str, dict[str, str]] = {}
        for hop in range(self.config.max_redirects + 1):
            if check_robots and self._robots is not None and not await self._robots.allowed(current):
                raise BlockedURLError(f"robots.txt of {current.host} disallows {_short(current)}")
            host = (current.raw_host or "").lower()
            resp = await self._request(state.session, current, cookies.get(host), deadline)
            try:
                if resp.status not in _REDIRECT_STATUSES or "Location" not in resp.headers:
                    return await self._page(resp, current, redirects, start, max_bytes)
                _keep_cookies(resp, cookies.setdefault(host, {}))
                target = _redirect_target(current, resp.headers["Location"])
            finally:
                _finish(resp)
            redirects.append(str(current))
            if hop == self.config.max_redirects:
                limit = self.config.max_redirects
                raise FetchError(f"too many redirects (more than {limit}) fetching {_short(redirects[0])}")
            key = (str(target), repr(sorted(cookies.get((target.raw_host or "").lower(), {}).items())))
            if key in seen:
                raise FetchError(f"redirect loop: {_short(current)} redirects back to {_short(target)}")
            seen.add(key)
            try:
                current = await state.resolver.check(target)
            except BlockedURLError as exc:
                raise BlockedURLError(f"redirect from {_short(current)} refused: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self, session: aiohttp.ClientSession, url: URL, cookies: dict[str, str] | None, deadline: float
    ) -> aiohttp.ClientResponse:
        """GET ``url`` (no redirects) with per-host rate limiting and bounded retries; return the response."""
        cfg = self.config
        host = (url.raw_host or "").lower()
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else None
        attempt = 0
        while True:
            await self._rate_limit(host, deadline)
            try:
                resp = await session.get(url, headers=headers, allow_redirects=False)
            except (DrgymError, asyncio.CancelledError):
                raise
            except aiohttp.ServerTimeoutError as exc:
                raise FetchError(f"timed out ({_timeout_kind(exc)}) fetching {_short(url)}") from None
            except aiohttp.ClientSSLError as exc:
                raise FetchError(f"TLS error fetching {_short(url)}: {_describe(exc)}") from None
            except (aiohttp.ClientConnectionError, OSError) as exc:
                delay = cfg.retry_backoff * 2**attempt
                if attempt < cfg.max_retries and time.monotonic() + delay < deadline:
                    logger.debug("retrying %s after connection error: %s", url, exc)
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                raise FetchError(f"connection failed fetching {_short(url)}: {_describe(exc)}") from None
            except (aiohttp.ClientError, ValueError) as exc:
                raise FetchError(f"request failed fetching {_short(url)}: {_describe(exc)}") from None
            if resp.status in _RETRY_STATUSES and attempt < cfg.max_retries:
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                delay = cfg.retry_backoff * 2**attempt if wait is None else wait
                if delay <= cfg.max_retry_after and time.monotonic() + delay < deadline:
                    resp.close()
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
            return resp

    async def _rate_limit(self, host: str, deadline: float) -> None:
        if self._limiter is None:
            return
        try:
            await self._limiter.acquire(host, max_wait=max(0.0, deadline - time.monotonic()))
        except RateLimitedError as exc:
            raise FetchError(f"per-host rate limit for {host}: {exc}") from None

    async def _page(
        self,
        resp: aiohttp.ClientResponse,
        url: URL,
        redirects: list[str],
        start: float,
        max_bytes: int | None,
    ) -> Page:
        """Check status and type from the headers, then read, inflate and decode the body."""
        if resp.status >= 400 or 300 <= resp.status < 400:
            raise _status_error(resp, url)
        mime, charset = _parse_content_type(resp.headers.get("Content-Type"))
        if mime and mime not in self.config.allowed_content_types:
            raise UnsupportedContentError(
                f"content type {mime!r} of {_short(url)} is not readable text; body not downloaded"
            )
        if mime == _PDF:
            require_pypdf()
        codings = _parse_codings(resp.headers.get("Content-Encoding"))
        check = self._sniff_check(mime, url)
        body = await self._read_body(resp, codings, max_bytes or self.config.max_bytes, check)
        sniffed = _sniff(body.data[:_SNIFF_BYTES], mime)
        kind = _PDF if sniffed == _PDF else (mime or "text/plain")
        if kind == _PDF:
            text, used = await self._pdf_text(body, url), None
        else:
            if not mime and body.data.lstrip()[:1] == b"<":
                kind = "text/html"
            text, used = await _decode(body.data, charset, _is_markup(kind))
        return Page(
            url=str(url),
            status=resp.status,
            content_type=kind,
            charset=used,
            text=text,
            raw_bytes_len=body.raw_len,
            truncated=body.truncated,
            redirects=list(redirects),
            elapsed_s=time.monotonic() - start,
        )

    def _sniff_check(self, mime: str, url: URL) -> Callable[[bytes], None]:
        """Refuse a body whose first bytes show a binary format, before reading the rest of it."""
        allowed = self.config.allowed_content_types

        def check(head: bytes) -> None:
            sniffed = _sniff(head, mime)
            if sniffed == _PDF and _PDF in allowed:
                require_pypdf()
            elif sniffed is not None and sniffed != mime:
                shown = f"declared {mime!r} but" if mime else "no content type;"
                raise UnsupportedContentError(
                    f"{_short(url)}: {shown} the body looks like {sniffed}; not readable text"
                )

        return check

    async def _read_body(
        self,
        resp: aiohttp.ClientResponse,
        codings: list[str],
        max_bytes: int,
        check: Callable[[bytes], None],
    ) -> _Body:
        """Stream the body: stop at ``max_bytes`` on the wire or ``max_decompressed_bytes`` inflated."""
        decoder = _BodyDecoder(codings, self.config.max_decompressed_bytes)
        out = bytearray()
        raw_len = 0
        truncated = False
        checked = False
        try:
            while not truncated:
                chunk = await resp.content.read(min(_CHUNK, max_bytes - raw_len))
                if not chunk:
                    break
                raw_len += len(chunk)
                out += decoder.feed(chunk)
                truncated = decoder.capped or (raw_len >= max_bytes and not _complete(resp, raw_len))
                if not checked and (len(out) >= _SNIFF_BYTES or truncated):
                    check(bytes(out[:_SNIFF_BYTES]))
                    checked = True
        except _CorruptBody as exc:
            if not out:
                raise FetchError(f"{exc} from {_short(resp.url)}") from None
            truncated = True
        except aiohttp.ServerTimeoutError as exc:
            raise FetchError(f"timed out ({_timeout_kind(exc)}) reading {_short(resp.url)}") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            if not out:
                raise FetchError(f"connection broke reading {_short(resp.url)}: {_describe(exc)}") from None
            truncated = True  # keep the part that arrived
        if not checked:
            check(bytes(out[:_SNIFF_BYTES]))
        return _Body(bytes(out), raw_len, truncated)

    async def _pdf_text(self, body: _Body, url: URL) -> str:
        try:
            return await extract_pdf_text(body.data, max_pages=self.config.pdf_max_pages)
        except UnsupportedContentError as exc:
            if body.truncated:
                cap = self.config.max_bytes
                raise UnsupportedContentError(
                    f"{exc} (the PDF at {_short(url)} is larger than max_bytes={cap} and was cut off)"
                ) from None
            raise

    async def _fetch_robots_text(self, url: URL) -> str | None:
        """robots.txt through this fetcher (same guard and limits); None when the site has none."""
        try:
            page = await self._fetch_bounded(url, check_robots=False, max_bytes=_ROBOTS_MAX_BYTES)
        except HTTPStatusError:
            return None
        return page.text if page.content_type != _PDF else None


def _complete(resp: aiohttp.ClientResponse, raw_len: int) -> bool:
    """Whether the whole body has arrived (so reaching ``max_bytes`` exactly is not a truncation)."""
    return resp.content.at_eof() or resp.headers.get("Content-Length") == str(raw_len)


async def _decode(data: bytes, charset: str | None, markup: bool) -> tuple[str, str]:
    if len(data) > _THREAD_DECODE_BYTES:
        return await asyncio.to_thread(decode_text, data, charset, sniff_markup=markup)
    return decode_text(data, charset, sniff_markup=markup)


def _finish(resp: aiohttp.ClientResponse) -> None:
    """Return a fully read connection to the pool; close one whose body was left unread (never drain it)."""
    if resp.content.at_eof():
        resp.release()
    else:
        resp.close()


def _keep_cookies(resp: aiohttp.ClientResponse, jar: dict[str, str]) -> None:
    # Some sites set a cookie on a redirect and expect it on the next hop; it is sent back to that host only,
    # within this one fetch.
    for name, morsel in resp.cookies.items():
        if len(jar) < 50 and len(morsel.value) < 4096:
            jar[name] = morsel.value


def _redirect_target(current: URL, location: str) -> URL:
    try:
        target = current.join(URL(location.strip()))
    except (ValueError, TypeError) as exc:
        shown = location[:200]
        raise FetchError(f"invalid redirect Location {shown!r} from {_short(current)}: {exc}") from None
    return target.with_fragment(None)


def _status_error(resp: aiohttp.ClientResponse, url: URL) -> HTTPStatusError:
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    message = f"HTTP {resp.status} {resp.reason or ''}".rstrip() + f" from {_short(url)}"
    if 300 <= resp.status < 400:
        message += " (a redirect without a usable Location)"
    if retry_after is not None:
        message += f" (Retry-After: {retry_after:g} s)"
    return HTTPStatusError(message, status=resp.status, url=str(url), retry_after=retry_after)


def _timeout_kind(exc: BaseException) -> str:
    return "connect timeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "read timeout"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _short(url: object, limit: int = 200) -> str:
    text = str(url)
    return text if len(text) <= limit else text[:limit] + "..."


async def _close_state(state: _LoopState) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - aclose is a coroutine
        running = None
    if state.loop is running:
        await state.session.close()
    elif state.loop.is_running() and not state.loop.is_closed():
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(state.session.close(), state.loop))
    else:
        _discard_state(state)


def _discard_state(state: _LoopState) -> None:
    """Let go of a session whose loop is gone or not running, without "unclosed session" warnings."""
    if state.loop.is_running() and not state.loop.is_closed():
        asyncio.run_coroutine_threadsafe(state.session.close(), state.loop)
        return
    connector = state.session.connector
    state.session.detach()
    if connector is not None:
        # Its loop cannot run the async close; drop the transports synchronously.
        connector._close()
