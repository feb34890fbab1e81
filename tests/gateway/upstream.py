"""Loopback servers for the gateway tests: a SearxNG-schema upstream that counts, and a gateway subprocess.

:class:`Upstream` runs on its own thread and event loop, so synchronous tests, client processes and gateway
subprocesses can all reach it. It records when each search arrived and what it asked, can answer slowly, and
serves a ``/secret`` page (which must never be fetched: the SSRF guard stands in front of it) and a Serper
endpoint that refuses the key by echoing it back (which must never leave the gateway).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Upstream:
    """A SearxNG-compatible search API on 127.0.0.1 that records every request."""

    delay_s: float = 0.0
    pages: dict[str, str] = field(default_factory=dict)
    """HTML served at a path (``/huge``); any other path is the ``/secret`` page."""
    searches: list[tuple[float, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Upstream:  # noqa: PYI034
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def queries(self) -> list[str]:
        with self._lock:
            return [q for _, q in self.searches]

    def times(self) -> list[float]:
        with self._lock:
            return [t for t, _ in self.searches]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_post("/serper/search", self._serper)
        app.router.add_get("/{tail:.*}", self._page)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        with self._lock:
            self.searches.append((time.monotonic(), q))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        slug = "".join(c if c.isalnum() else "-" for c in q.lower())[:40]
        results = [
            {"url": f"http://127.0.0.1:9/{slug}/{i}", "title": f"{q} result {i}", "content": f"About {q}, part {i}."}
            for i in range(1, 4)
        ]
        return web.json_response({"query": q, "results": results})

    async def _serper(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-API-KEY", "")
        return web.json_response({"message": f"invalid API key {key}", "statusCode": 403}, status=403)

    async def _page(self, request: web.Request) -> web.Response:
        with self._lock:
            self.paths.append(request.path)
        if request.path in self.pages:
            return web.Response(text=self.pages[request.path], content_type="text/html")
        return web.Response(text="<html><body><p>internal secret</p></body></html>", content_type="text/html")


def stored(path: str, queries: list[str], backend: str = "searxng") -> list[str]:
    """Which of ``queries`` the store at ``path`` holds an answer for."""
    from drgym.search.cache import SearchStore

    store = SearchStore(path, create=False)
    try:
        options = store.search_options_sync(backend)
        return [
            q for q in queries
            if any(store.get_search_sync(backend, q, 10, options=o) is not None for o in options)
        ]
    finally:
        store.close()


@dataclass
class GatewayProcess:
    """A ``drgym serve`` child process."""

    proc: subprocess.Popen[str]
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def start_gateway(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0) -> GatewayProcess:
    """Start ``drgym serve --port 0 ARGS`` and wait for its "listening on" line."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "drgym.cli", "serve", *args]
    if "--port" not in args:
        command += ["--port", "0"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT)
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "listening on " in line:
            url = line.rsplit("listening on ", 1)[1].strip()
            threading.Thread(target=_drain, args=(proc,), daemon=True).start()
            return GatewayProcess(proc, url)
    proc.kill()
    raise RuntimeError("drgym serve did not start:\n" + "".join(lines))


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    for _ in proc.stderr:
        pass


@contextmanager
def gateway(*args: str, env: dict[str, str] | None = None) -> Iterator[GatewayProcess]:
    """A gateway process for the ``with`` block, stopped with SIGTERM (killed if it hangs)."""
    gw = start_gateway(*args, env=env)
    try:
        yield gw
    finally:
        stop(gw)


def stop(gw: GatewayProcess) -> None:
    if gw.proc.poll() is None:
        gw.proc.terminate()
        try:
            gw.proc.wait(30)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait(10)
