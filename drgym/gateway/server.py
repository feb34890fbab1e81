"""``drgym serve``: the tool gateway, an aiohttp application over one :class:`GatewayServices`.

Endpoints (JSON; see :mod:`drgym.gateway.wire`)::

    POST /v1/search   {query, k, episode, record_id?, budget_per_episode?}       -> {results, usage}
    POST /v1/open     {url, episode, ...}                                         -> {document, usage}
    POST /v1/browse   {urls, question, subquestions, memory, memory_chars, max_pages, time_budget_s,
                       episode, ...}                                              -> {pages, memory_added, usage}
    GET  /health      -> {"status": "ok", ...}   (no token needed; says nothing secret)
    GET  /metrics     -> Prometheus text format

Safe by default: it binds 127.0.0.1; a token (``Authorization: Bearer T``) is checked on everything but
``/health`` when set, and required for any other address; bodies over 1 MiB get 413 before anything runs; page
reads go through the SSRF-guarded fetcher of the stack on the gateway's side; configured secrets are
replaced by ``***`` in every message that leaves it. On SIGTERM/SIGINT it stops accepting, finishes the
requests in flight, then closes the stack (flushing the store).

Under load (:mod:`drgym.gateway.admission`): a bounded number of tool requests are worked on at once, per lane
(searches; page opens and reads), the rest wait first come first served and start their time budgets with
their turn; a full queue answers 503 ``Busy`` with ``Retry-After``. ``/metrics`` shows the queues and the event
loop's lag.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from drgym._listen import listen
from drgym.errors import BackendError, ConfigError, DrgymError
from drgym.gateway import wire
from drgym.gateway.admission import Admission, GatewayBusy
from drgym.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from drgym.gateway.services import GatewayConfig, GatewayServices

__all__ = ["DEFAULT_PORT", "build_app", "check_bind", "run", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765
TOKEN_ENV = wire.TOKEN_ENV

_SERVICES: web.AppKey[GatewayServices] = web.AppKey("services", GatewayServices)
_METRICS: web.AppKey[GatewayMetrics] = web.AppKey("metrics", GatewayMetrics)
_TOKEN: web.AppKey[str] = web.AppKey("token", str)
_STATE: web.AppKey[dict[str, Any]] = web.AppKey("state", dict)
_ADMISSION: web.AppKey[dict[str, Admission]] = web.AppKey("admission", dict)
_LANES = {"search": "search", "open": "pages", "browse": "pages"}
"""Searches and page work queue apart: a search (one upstream call) never waits behind page extraction."""

_ENDPOINTS = frozenset({"search", "open", "browse", "metrics", "health"})
_Handler = Callable[[GatewayServices, Mapping[str, Any]], Awaitable[dict[str, Any]]]


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token (anyone who reaches it could spend the budget)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise ConfigError(
            f"drgym serve: binding {host!r} (not loopback) needs a shared token: pass --token T or set "
            f"{TOKEN_ENV}, and give clients the same token"
        )


def build_app(
    services: GatewayServices, *, token: str | None = None, max_in_flight: int = 256, max_queue: int = 8192
) -> web.Application:
    """The gateway application over ``services`` (which the caller closes).

    Args:
        max_in_flight / max_queue: Requests worked on at once and requests that may wait, in each of two
            lanes: searches, and page work (``open``, ``browse``), so that cheap searches do not queue behind
            page extraction.
    """
    app = web.Application(client_max_size=wire.MAX_BODY_BYTES, middlewares=[_guard])
    app[_SERVICES] = services
    app[_ADMISSION] = {lane: Admission(max_in_flight, max_queue) for lane in sorted(set(_LANES.values()))}
    app[_METRICS] = GatewayMetrics(services)
    app[_TOKEN] = token or ""
    app[_STATE] = {"closing": False, "in_flight": 0}
    services.add_secret(token)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    for endpoint, handler in (("search", _search), ("open", _open), ("browse", _browse)):
        app.router.add_post(f"{wire.API_PREFIX}/{endpoint}", _tool(endpoint, handler))
    return app


# ------------------------------------------------------------------------------------------ middleware


def _refusal(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "base": kind, "message": message}}, status=status)


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    app = request.app
    metrics = app[_METRICS]
    token = app[_TOKEN]
    if token and request.path != "/health":
        sent = request.headers.get(wire.TOKEN_HEADER, "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            metrics.errors.labels("unauthorized").inc()
            metrics.requests.labels(_endpoint_label(request.path), "unauthorized").inc()
            why = "missing" if not sent else "wrong"
            return _refusal(
                401, "Unauthorized",
                f"gateway token {why}: send `Authorization: Bearer <token>` (clients: search_kwargs="
                f'{{"token": ...}} or {TOKEN_ENV})',
            )
    declared = request.content_length
    if declared is not None and declared > wire.MAX_BODY_BYTES:
        metrics.errors.labels("too_large").inc()
        return _refusal(413, "TooLarge", f"request body of {declared} bytes exceeds {wire.MAX_BODY_BYTES}")
    return await handler(request)


def _endpoint_label(path: str) -> str:
    """A known endpoint's name, else ``other`` (label values must not grow with what clients send)."""
    name = path.rsplit("/", 1)[-1]
    return name if name in _ENDPOINTS else "other"


# ------------------------------------------------------------------------------------------ handlers


async def _health(request: web.Request) -> web.Response:
    services = request.app[_SERVICES]
    state = request.app[_STATE]
    return web.json_response(
        {
            "status": "closing" if state["closing"] else "ok",
            "backend": services.name,
            "in_flight": state["in_flight"],
            "queued": {lane: a.waiting for lane, a in request.app[_ADMISSION].items()},
            "uptime_s": round(time.time() - services.started, 3),
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _tool(endpoint: str, handler: _Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve_tool(request: web.Request) -> web.Response:
        app = request.app
        services, metrics, state = app[_SERVICES], app[_METRICS], app[_STATE]
        if state["closing"]:
            metrics.requests.labels(endpoint, "closing").inc()
            return _refusal(503, "Closing", "the gateway is shutting down; retry shortly")
        started = time.perf_counter()
        state["in_flight"] += 1
        metrics.in_flight.inc()
        lane = _LANES[endpoint]
        admission = app[_ADMISSION][lane]
        queued = True
        metrics.queued.labels(lane).inc()
        try:
            try:
                async with admission.turn() as waited:
                    queued = False
                    metrics.queued.labels(lane).dec()
                    metrics.queue_wait.labels(lane).observe(waited)
                    return await _answer(endpoint, handler, request, services, metrics)
            except GatewayBusy as busy:
                metrics.errors.labels("busy").inc()
                metrics.requests.labels(endpoint, "busy").inc()
                response = _refusal(503, wire.BUSY, f"{busy}: {admission.waiting} requests are waiting")
                response.headers["Retry-After"] = f"{busy.retry_after_s:g}"
                return response
        finally:
            if queued:  # refused, or the client went away while it waited
                metrics.queued.labels(lane).dec()
            state["in_flight"] -= 1
            metrics.in_flight.dec()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    return serve_tool


async def _answer(
    endpoint: str, handler: _Handler, request: web.Request, services: GatewayServices, metrics: GatewayMetrics
) -> web.Response:
    """Run one admitted tool request: parse, call the services, turn every failure into a typed answer."""
    try:
        try:
            body = await request.json(loads=json.loads)
        except web.HTTPRequestEntityTooLarge:
            metrics.errors.labels("too_large").inc()
            metrics.requests.labels(endpoint, "too_large").inc()
            return _refusal(413, "TooLarge", f"request body exceeds {wire.MAX_BODY_BYTES} bytes")
        except (ValueError, UnicodeDecodeError):
            raise wire.WireError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise wire.WireError("the body must be a JSON object")
        answer = await handler(services, body)
        metrics.requests.labels(endpoint, "ok").inc()
        return web.json_response(answer)
    except wire.WireError as exc:
        metrics.errors.labels("bad_request").inc()
        metrics.requests.labels(endpoint, "bad_request").inc()
        return _refusal(400, "BadRequest", f"{endpoint}: {services.redact(str(exc))}")
    except DrgymError as exc:  # a tool error is an answer: the client raises the same class
        metrics.errors.labels(type(exc).__name__).inc()
        metrics.requests.labels(endpoint, "tool_error").inc()
        return web.json_response({"error": wire.error_to_json(exc, services.redact(str(exc)))})
    except Exception as exc:  # noqa: BLE001  (reported to the client; the server keeps serving)
        logger.error("gateway %s failed unexpectedly: %s", endpoint, services.redact(repr(exc)))
        metrics.errors.labels("unexpected").inc()
        metrics.requests.labels(endpoint, "tool_error").inc()
        error = BackendError(f"the gateway failed unexpectedly ({type(exc).__name__}) during {endpoint}")
        return web.json_response({"error": wire.error_to_json(error, str(error))})


def _text(body: Mapping[str, Any], name: str, limit: int, *, empty: bool = False) -> str:
    value = body.get(name)
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise wire.WireError(f"`{name}` must be a non-empty string")
    if len(value) > limit:
        raise wire.WireError(f"`{name}` is {len(value)} characters, more than {limit}")
    return value


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise wire.WireError(f"`{name}` must be a number from {low:g} to {high:g}, got {value!r}")
    return value


def _identity(body: Mapping[str, Any]) -> dict[str, Any]:
    episode = _text(body, "episode", 256)
    record_id = body.get("record_id")
    if record_id is not None and (not isinstance(record_id, str) or len(record_id) > 1024):
        raise wire.WireError("`record_id` must be a string of at most 1024 characters or null")
    limit = body.get("budget_per_episode")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise wire.WireError(f"`budget_per_episode` must be an integer >= 0 or null, got {limit!r}")
    return {"episode": episode, "record_id": record_id, "limit": limit}


async def _search(services: GatewayServices, body: Mapping[str, Any]) -> dict[str, Any]:
    query = _text(body, "query", wire.MAX_QUERY_CHARS)
    k = int(_number(body, "k", 10, 1, 100))
    results, usage = await services.search(query, k, **_identity(body))
    return {"results": [wire.result_to_json(r) for r in results], "usage": wire.usage_to_json(usage)}


async def _open(services: GatewayServices, body: Mapping[str, Any]) -> dict[str, Any]:
    url = _text(body, "url", wire.MAX_URL_CHARS)
    document, usage = await services.open(url, **_identity(body))
    return {"document": wire.document_to_json(document), "usage": wire.usage_to_json(usage)}


async def _browse(services: GatewayServices, body: Mapping[str, Any]) -> dict[str, Any]:
    urls = body.get("urls")
    if not isinstance(urls, list) or not all(isinstance(u, str) and len(u) <= wire.MAX_URL_CHARS for u in urls):
        raise wire.WireError(f"`urls` must be a list of strings of at most {wire.MAX_URL_CHARS} characters")
    if len(urls) > wire.MAX_URLS:
        raise wire.WireError(f"`urls` holds {len(urls)} URLs, more than {wire.MAX_URLS}")
    question = _text(body, "question", wire.MAX_QUERY_CHARS * 8)
    subquestions = body.get("subquestions") or {}
    if not isinstance(subquestions, dict) or not all(isinstance(v, str) for v in subquestions.values()):
        raise wire.WireError("`subquestions` must map URLs to strings")
    memory = body.get("memory") or []
    if (
        not isinstance(memory, list)
        or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in memory)
        or sum(len(p[1]) for p in memory) > wire.MAX_MEMORY_CHARS
    ):
        raise wire.WireError(
            f"`memory` must be a list of [url, text] pairs of at most {wire.MAX_MEMORY_CHARS} characters"
        )
    memory_chars = int(_number(body, "memory_chars", 20_000, 1, wire.MAX_MEMORY_CHARS))
    max_pages = int(_number(body, "max_pages", 5, 1, wire.MAX_URLS))
    budget_s = float(_number(body, "time_budget_s", 60.0, 0.001, services.config.max_browse_s))
    pages, added, usage = await services.browse(
        urls,
        question=question,
        subquestions={str(k): v for k, v in subquestions.items()},
        memory=[(u, t) for u, t in memory],
        memory_chars=memory_chars,
        max_pages=max_pages,
        time_budget_s=budget_s,
        **_identity(body),
    )
    return {
        "pages": [p.to_dict() for p in pages],
        "memory_added": [[u, t] for u, t in added],
        "usage": wire.usage_to_json(usage),
    }


# ------------------------------------------------------------------------------------------ running it


async def serve(
    config: GatewayConfig | GatewayServices,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    shutdown_timeout_s: float = 60.0,
    backlog: int = 4096,
    max_in_flight: int = 256,
    max_queue: int = 8192,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled), then finish in-flight requests and close.

    ``max_in_flight`` tool requests are worked on at once; up to ``max_queue`` more wait their turn (first come,
    first served; their time budgets start with their turn); past that, HTTP 503 with ``Retry-After``. Each
    limit holds per lane: searches, and page work (open, browse).

    Raises:
        ConfigError: a non-loopback ``host`` without a token, or a bad port.
        BackendError: the port cannot be bound.
    """
    check_bind(host, token)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"drgym serve: --port must be an integer from 0 to 65535, got {port!r}")
    services = config if isinstance(config, GatewayServices) else GatewayServices(config)
    app = build_app(services, token=token, max_in_flight=max_in_flight, max_queue=max_queue)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s, handle_signals=False)
    sock = listen(host, port, backlog, command="drgym serve")
    lag: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        lag = asyncio.create_task(_watch_loop_lag(app[_METRICS]))
        await web.SockSite(runner, sock).start()
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{sock.getsockname()[1]}"
        logger.info("drgym serve: %s at %s", services.name, url)
        if on_ready is not None:
            on_ready(url)
        await (stop or asyncio.Event()).wait()
    finally:
        app[_STATE]["closing"] = True
        if lag is not None:
            lag.cancel()
        try:
            await runner.cleanup()  # stops listening, waits for the requests in flight
        finally:
            sock.close()
            await services.aclose()  # flushes and closes the store



async def _watch_loop_lag(metrics: GatewayMetrics, period_s: float = 0.1) -> None:
    """Record how late a timer fires: the time the loop was held by work that does not yield."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        late = max(0.0, loop.time() - due)
        metrics.loop_lag.observe(late)
        if late > worst:
            worst = late
            metrics.loop_lag_max.set(late)


def run(
    config: GatewayConfig,
    *,
    host: str,
    port: int,
    token: str | None,
    max_in_flight: int = 256,
    max_queue: int = 8192,
) -> int:
    """Serve from the command line until SIGTERM or SIGINT; prints the URL on stderr once it is ready."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            print(f"drgym serve: listening on {url}", file=sys.stderr, flush=True)

        await serve(
            config, host=host, port=port, token=token, stop=stop, on_ready=ready, max_in_flight=max_in_flight,
            max_queue=max_queue,
        )

    asyncio.run(main())
    print("drgym serve: stopped", file=sys.stderr, flush=True)
    return 0
