"""Injected latency and faults for the mini-web, so clients meet a slow, flaky web on loopback.

:class:`FaultConfig` says how the site misbehaves; :func:`fault_middleware` makes an ``aiohttp`` middleware
of it. Every request waits ``latency_ms`` (plus a seeded jitter), then with probability ``fault_rate`` gets one
of the faults a real site or search API produces:

* ``429``: *Too Many Requests* with a ``Retry-After`` header;
* ``503``: *Service Unavailable*;
* ``reset``: the connection is reset (TCP RST) before any answer;
* ``drip``: the real answer, sent a few bytes at a time with pauses (a slow-drip server that defeats
  per-read timeouts; only a total time limit stops the client).

Draws are deterministic: a request's fate is a hash of the seed, the request (method, path and query, body)
and how many times that same request was seen before. A retry of a failed request draws anew, and concurrent
clients do not change which requests fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from drgym.errors import ConfigError

__all__ = ["FAULT_KINDS", "FaultConfig", "fault_middleware"]

logger = logging.getLogger(__name__)

FAULT_KINDS: tuple[str, ...] = ("429", "503", "reset", "drip")
"""The faults :class:`FaultConfig` can inject."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_BODY_HASHED = 64 * 1024
_MAX_COUNTED = 100_000  # distinct requests remembered for the retry count; then the count starts over


@dataclass(frozen=True)
class FaultConfig:
    """How the mini-web misbehaves. The default injects nothing.

    Attributes:
        latency_ms: Delay before every answer, milliseconds.
        jitter_ms: Extra delay drawn uniformly from ``[0, jitter_ms)`` per request.
        fault_rate: Probability that a request gets a fault, in ``[0, 1]``.
        kinds: The faults drawn from, with equal odds (a subset of :data:`FAULT_KINDS`).
        seed: Seed of the draws.
        retry_after_s: ``Retry-After`` sent with a 429, seconds.
        drip_bytes: Bytes per write of a slow-drip answer.
        drip_interval_s: Pause between two writes of a slow-drip answer.
        drip_max_s: A slow-drip answer is abandoned after this long (bounds the server's own work).
        exempt_paths: Paths never faulted nor delayed (``/robots.txt`` by default).
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    retry_after_s: float = 1.0
    drip_bytes: int = 16
    drip_interval_s: float = 0.5
    drip_max_s: float = 120.0
    exempt_paths: frozenset[str] = field(default_factory=lambda: frozenset({"/robots.txt"}))

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "retry_after_s"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ConfigError(f"FaultConfig.{name} must be a number >= 0, got {value!r}")
        if not _finite(self.fault_rate) or not 0.0 <= self.fault_rate <= 1.0:
            raise ConfigError(f"FaultConfig.fault_rate must be a probability in [0, 1], got {self.fault_rate!r}")
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise ConfigError(
                f"FaultConfig.kinds must name some of {', '.join(FAULT_KINDS)}; got {list(self.kinds)!r}"
            )
        object.__setattr__(self, "kinds", kinds)
        for name in ("drip_interval_s", "drip_max_s"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ConfigError(f"FaultConfig.{name} must be a positive number, got {value!r}")
        if isinstance(self.drip_bytes, bool) or not isinstance(self.drip_bytes, int) or self.drip_bytes < 1:
            raise ConfigError(f"FaultConfig.drip_bytes must be a positive integer, got {self.drip_bytes!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"FaultConfig.seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "exempt_paths", frozenset(self.exempt_paths))

    @property
    def active(self) -> bool:
        """Whether this config changes anything (else no middleware is installed)."""
        return self.latency_ms > 0 or self.jitter_ms > 0 or self.fault_rate > 0


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class _Plan:
    delay_s: float
    fault: str | None


class _Dice:
    """The seeded, order-independent draws of one app."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._seen: dict[bytes, int] = {}

    def plan(self, method: str, path_qs: str, body: bytes) -> _Plan:
        cfg = self.config
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{cfg.seed}\0{method}\0{path_qs}\0".encode("utf-8", "surrogatepass"))
        digest.update(body[:_MAX_BODY_HASHED])
        key = digest.digest()
        if len(self._seen) >= _MAX_COUNTED:
            self._seen.clear()
        count = self._seen.get(key, 0)
        self._seen[key] = count + 1
        u_fault, u_kind, u_jitter = _uniforms(key, count)
        delay = (cfg.latency_ms + cfg.jitter_ms * u_jitter) / 1000.0
        if u_fault >= cfg.fault_rate:
            return _Plan(delay, None)
        return _Plan(delay, cfg.kinds[min(int(u_kind * len(cfg.kinds)), len(cfg.kinds) - 1)])


def _uniforms(key: bytes, count: int) -> tuple[float, float, float]:
    """Three independent uniforms in ``[0, 1)`` for the ``count``-th sighting of the request ``key``."""
    raw = hashlib.blake2b(key + count.to_bytes(8, "little"), digest_size=24).digest()
    return tuple(int.from_bytes(raw[i : i + 8], "little") / 2**64 for i in (0, 8, 16))  # type: ignore[return-value]


def fault_middleware(config: FaultConfig) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    """An ``aiohttp`` middleware injecting ``config``'s latency and faults (see the module docstring)."""
    dice = _Dice(config)

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path in config.exempt_paths:
            return await handler(request)
        # aiohttp keeps the body it read, so the handler still gets it (capped at client_max_size).
        body = await request.read() if request.can_read_body else b""
        plan = dice.plan(request.method, request.path_qs, body)
        if plan.delay_s > 0:
            await asyncio.sleep(plan.delay_s)
        if plan.fault == "429":
            retry_after = f"{config.retry_after_s:g}"
            return web.json_response(
                {"message": "Too many requests (injected fault); retry later.", "statusCode": 429},
                status=429,
                headers={"Retry-After": retry_after},
            )
        if plan.fault == "503":
            return web.json_response(
                {"message": "Service unavailable (injected fault).", "statusCode": 503}, status=503
            )
        if plan.fault == "reset":
            return _reset(request)
        response = await handler(request)
        if plan.fault == "drip":
            return await _drip(request, response, config)
        return response

    return middleware


def _reset(request: web.Request) -> web.StreamResponse:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed or overloaded peer does."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:  # pragma: no cover - a platform without SO_LINGER: a plain close still breaks it
                pass
        transport.abort()
    return web.Response(status=500)  # never reaches the client: the connection is gone


async def _drip(request: web.Request, response: web.StreamResponse, config: FaultConfig) -> web.StreamResponse:
    """Send ``response``'s body ``drip_bytes`` at a time, ``drip_interval_s`` apart, until done or abandoned."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, (bytes, bytearray)):
        return response  # a streamed answer is already paced by its handler
    slow = web.StreamResponse(status=response.status, reason=response.reason)
    for name in ("Content-Type", "Cache-Control", "Retry-After"):
        if name in response.headers:
            slow.headers[name] = response.headers[name]
    loop = asyncio.get_running_loop()
    give_up = loop.time() + config.drip_max_s
    try:
        await slow.prepare(request)
        for start in range(0, len(body), config.drip_bytes):
            await slow.write(bytes(body[start : start + config.drip_bytes]))
            if loop.time() >= give_up:
                break
            await asyncio.sleep(config.drip_interval_s)
        await slow.write_eof()
    except (ConnectionError, RuntimeError) as exc:  # the client gave up: what a slow-drip server expects
        logger.debug("miniweb: slow-drip client went away: %r", exc)
    return slow
