"""Web fixtures: loopback HTTP servers serving real pages, compressed bodies, bombs, slow and hostile replies.

``web_server`` is an ``aiohttp.web`` application on 127.0.0.1 (a fresh one per test); ``raw_server`` is a bare
asyncio TCP server that writes exact bytes, for responses aiohttp's server would tidy up (no Content-Type).
``fetch_config`` allow-lists 127.0.0.1, the only way a fetcher may reach loopback.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from drgym.web.fetch import FetchConfig

UNICODE_TEXT = "Café naïve — 日本語 ✓"
CYRILLIC_TEXT = "Привет, мир"
LATIN_TEXT = "café “quoted” €5"
PAGE_TEXT = "The quick brown fox jumps over the lazy dog. " * 200
BOMB_SIZE = 64 * 1024 * 1024
STREAM_TOTAL = 1024 * 1024 * 1024
ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n\nUser-agent: otherbot\nDisallow: /\n"


def html(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head>{head}<title>t</title></head><body><p>{body}</p></body></html>"


@functools.cache
def bomb(coding: str) -> bytes:
    """A tiny compressed body that inflates to 64 MiB of text (built once per test session)."""
    data = b"A" * BOMB_SIZE
    if coding == "gzip":
        return gzip.compress(data, compresslevel=9)
    if coding == "br":
        return brotli.compress(data, quality=5)
    return zlib.compress(data, 9)


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    n = len(pages)
    font_id = 3 + 2 * n
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<</Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (3 + 2 * k) for k in range(n)), n),
    ]
    for i, text in enumerate(pages):
        stream = b"BT /F1 18 Tf 72 700 Td (" + text.encode("latin-1") + b") Tj ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font_id)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@dataclass
class ServerLog:
    """What the test server saw, for assertions about what the client did."""

    hits: dict[str, int] = field(default_factory=dict)
    streamed: dict[str, int] = field(default_factory=dict)
    stream_done: dict[str, asyncio.Event] = field(default_factory=dict)
    user_agents: list[str] = field(default_factory=list)
    accept_encodings: list[str] = field(default_factory=list)

    def hit(self, request: web.Request) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        self.user_agents.append(request.headers.get("User-Agent", ""))
        self.accept_encodings.append(request.headers.get("Accept-Encoding", ""))


@dataclass
class WebServer:
    """A running test server: ``url(path)`` builds absolute URLs, ``log`` records what it saw."""

    server: TestServer
    log: ServerLog

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def origin(self) -> URL:
        return self.server.make_url("/")


def _build_app(log: ServerLog) -> web.Application:
    routes = web.RouteTableDef()

    def typed(body: bytes, content_type: str, **headers: str) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type, **headers})

    @routes.get("/html/header-utf8")
    async def header_utf8(request: web.Request) -> web.Response:
        return typed(html(UNICODE_TEXT).encode("utf-8"), "text/html; charset=UTF-8")

    @routes.get("/html/header-cp1251")
    async def header_cp1251(request: web.Request) -> web.Response:
        return typed(html(CYRILLIC_TEXT).encode("cp1251"), "text/html; charset=windows-1251")

    @routes.get("/html/meta-charset")
    async def meta_charset(request: web.Request) -> web.Response:
        page = html(CYRILLIC_TEXT, '<meta charset="koi8-r">')
        return typed(page.encode("koi8_r"), "text/html")

    @routes.get("/html/http-equiv")
    async def http_equiv(request: web.Request) -> web.Response:
        page = html(LATIN_TEXT, '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">')
        return typed(page.encode("cp1252"), "text/html")

    @routes.get("/html/none-utf8")
    async def none_utf8(request: web.Request) -> web.Response:
        return typed(html(UNICODE_TEXT).encode("utf-8"), "text/html")

    @routes.get("/html/none-cp1252")
    async def none_cp1252(request: web.Request) -> web.Response:
        return typed(html(LATIN_TEXT).encode("cp1252"), "text/html")

    @routes.get("/html/bom-utf16")
    async def bom_utf16(request: web.Request) -> web.Response:
        return typed(html(UNICODE_TEXT).encode("utf-16"), "text/html")

    @routes.get("/html/invalid-utf8")
    async def invalid_utf8(request: web.Request) -> web.Response:
        body = html("good").encode() + b"\xff\xfe\xc3(" + html("after").encode()
        return typed(body, "text/html; charset=utf-8")

    @routes.get("/html/bogus-charset")
    async def bogus_charset(request: web.Request) -> web.Response:
        return typed(html(UNICODE_TEXT).encode("utf-8"), "text/html; charset=no-such-charset")

    @routes.get("/encoded/{coding}")
    async def encoded(request: web.Request) -> web.Response:
        coding = request.match_info["coding"]
        data = html(UNICODE_TEXT + PAGE_TEXT).encode("utf-8")
        if coding == "gzip":
            body = gzip.compress(data)
        elif coding == "deflate":
            body = zlib.compress(data)
        elif coding == "deflate-raw":
            co = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body, coding = co.compress(data) + co.flush(), "deflate"
        elif coding == "br":
            body = brotli.compress(data)
        elif coding == "gzip-corrupt":
            body, coding = b"\x1f\x8b\x08\x00garbage-not-deflate" * 10, "gzip"
        else:
            body = data
        return typed(body, "text/html; charset=utf-8", **{"Content-Encoding": coding})

    @routes.get("/bomb/{coding}")
    async def bomb_route(request: web.Request) -> web.Response:
        coding = request.match_info["coding"]
        return typed(bomb(coding), "text/plain", **{"Content-Encoding": coding})

    async def stream(request: web.Request, content_type: str, chunk: bytes, total: int) -> web.StreamResponse:
        """Write ``total`` bytes in chunks, counting what was written until the client hangs up."""
        done = log.stream_done.setdefault(request.path, asyncio.Event())
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(total)})
        log.streamed[request.path] = 0
        try:
            await resp.prepare(request)
            while log.streamed[request.path] < total:
                await resp.write(chunk)
                log.streamed[request.path] += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            done.set()
        return resp

    @routes.get("/huge/{kind}")
    async def huge(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        content_type = {"image": "image/png", "octet": "application/octet-stream", "video": "video/mp4"}.get(
            kind, "text/plain; charset=utf-8"
        )
        png = b"\x89PNG\r\n\x1a\n" + b"\0" * (64 * 1024 - 8)
        chunk = png if kind != "text" else b"word " * (64 * 1024 // 5)
        return await stream(request, content_type, chunk, STREAM_TOTAL)

    @routes.get("/slow-headers")
    async def slow_headers(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return typed(b"late", "text/plain")

    @routes.get("/drip")
    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            for _ in range(1000):
                await resp.write(b"x")
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        return resp

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        log.hit(request)
        if n == 0:
            return typed(html("end of chain").encode(), "text/html; charset=utf-8")
        # Relative Location: resolved against the current URL.
        raise web.HTTPFound(f"{n - 1}")

    @routes.get("/loop/a")
    async def loop_a(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/loop/b")

    @routes.get("/loop/b")
    async def loop_b(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/loop/a")

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    @routes.get("/cookie/start")
    async def cookie_start(request: web.Request) -> web.Response:
        resp = web.HTTPFound("/cookie/check")
        resp.set_cookie("session", "s1")
        raise resp

    @routes.get("/cookie/check")
    async def cookie_check(request: web.Request) -> web.Response:
        if request.cookies.get("session") != "s1":
            raise web.HTTPFound("/cookie/start")
        return typed(html("welcome back").encode(), "text/html; charset=utf-8")

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {"Retry-After": request.query["retry_after"]} if "retry_after" in request.query else {}
        return web.Response(status=code, text=f"status {code}", headers=headers)

    @routes.get("/flaky")
    async def flaky(request: web.Request) -> web.Response:
        log.hit(request)
        if log.hits[request.path] == 1:
            return web.Response(status=503, text="busy", headers={"Retry-After": "0"})
        return typed(html("recovered").encode(), "text/html; charset=utf-8")

    @routes.get("/pdf/{pages}")
    async def pdf(request: web.Request) -> web.Response:
        count = int(request.match_info["pages"])
        return typed(make_pdf([f"Hello PDF page {i + 1}" for i in range(count)]), "application/pdf")

    @routes.get("/pdf-broken")
    async def pdf_broken(request: web.Request) -> web.Response:
        return typed(b"%PDF-1.4\n this is not really a pdf", "application/pdf")

    @routes.get("/png-as-html")
    async def png_as_html(request: web.Request) -> web.Response:
        return typed(b"\x89PNG\r\n\x1a\n" + b"\0" * 4096, "text/html")

    @routes.get("/robots.txt")
    async def robots(request: web.Request) -> web.Response:
        log.hit(request)
        return typed(ROBOTS_TXT.encode(), "text/plain")

    @routes.get("/private/page")
    async def private_page(request: web.Request) -> web.Response:
        log.hit(request)
        return typed(html("secret").encode(), "text/html; charset=utf-8")

    @routes.get("/public/page")
    async def public_page(request: web.Request) -> web.Response:
        log.hit(request)
        return typed(html("public").encode(), "text/html; charset=utf-8")

    @routes.get("/json")
    async def json_route(request: web.Request) -> web.Response:
        return web.json_response({"answer": "Paris"})

    @routes.get("/no-content")
    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture
async def web_server() -> AsyncIterator[WebServer]:
    """A real aiohttp server on 127.0.0.1 serving the routes above."""
    log = ServerLog()
    server = TestServer(_build_app(log), host="127.0.0.1")
    await server.start_server()
    try:
        yield WebServer(server, log)
    finally:
        await server.close()


@dataclass
class RawServer:
    """A bare TCP server answering each request path with the exact bytes registered for it."""

    port: int
    responses: dict[str, bytes]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def raw_response(status_line: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status_line}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    """Loopback server that writes registered raw HTTP responses (e.g. without a Content-Type)."""
    responses: dict[str, bytes] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].decode("latin-1")
            writer.write(responses.get(path, raw_response("404 Not Found", {"Content-Length": "0"}, b"")))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield RawServer(port, responses)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def fetch_config() -> Callable[..., FetchConfig]:
    """Build a test config: loopback allow-listed, short timeouts, no rate limit or retries unless asked."""

    def build(**overrides: object) -> FetchConfig:
        options: dict[str, object] = {
            "allow_hosts": frozenset({"127.0.0.1"}),
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "total_timeout": 5.0,
            "per_host_rate": None,
            "max_retries": 0,
        }
        options.update(overrides)
        return FetchConfig(**options)  # type: ignore[arg-type]

    return build
