"""Run the mini-web as a standalone loopback server (``drgym miniweb serve``), for demos, tools and benchmarks.

Any HTTP client can then use it as it would the web: ``GET /wiki/<title>`` pages, the SearxNG API at
``/search?format=json`` (point ``SEARXNG_URL`` or ``base_url`` at the server) and the Serper API at
``POST /serper/search`` (``SerperBackend(base_url="http://127.0.0.1:PORT/serper", api_key="any")``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from aiohttp import web

from drgym._listen import listen
from drgym.errors import ConfigError
from drgym.miniweb.faults import FaultConfig
from drgym.miniweb.site import MiniWiki, build_app, load_wiki

__all__ = ["serve"]

logger = logging.getLogger(__name__)


async def serve(
    corpus: str = "demo",
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    faults: FaultConfig | None = None,
    results_per_page: int = 10,
    backlog: int = 2048,
    on_ready: Callable[[str, MiniWiki], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``corpus`` at ``http://host:port`` until ``stop`` is set (or the task is cancelled).

    Args:
        corpus: A corpus name (``drgym.data.list_corpora()``).
        host: A loopback address: the site is a test fixture, never exposed to a network.
        port: The port; 0 picks a free one (``on_ready`` learns which).
        faults: Latency and faults to inject.
        results_per_page: Results per page of the SearxNG API.
        backlog: Pending connections the socket queues (many clients connect at once in benchmarks).
        on_ready: Called with the base URL and the content once the server accepts connections.
        stop: Set it to stop the server; by default it runs until cancelled.

    Raises:
        ConfigError: ``host`` is not a loopback address, or a bad port.
        BackendError: The port cannot be bound.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"miniweb serve: host must be a loopback IP address like 127.0.0.1, got {host!r}") from None
    if not address.is_loopback:
        raise ConfigError(f"miniweb serve: host must be a loopback address (the site is local), got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"miniweb serve: port must be an integer from 0 to 65535, got {port!r}")
    sock = listen(str(address), port, backlog, command="miniweb serve")
    try:
        wiki = await asyncio.to_thread(load_wiki, corpus)
        runner = web.AppRunner(build_app(wiki, results_per_page=results_per_page, faults=faults), access_log=None)
        await runner.setup()
    except BaseException:
        sock.close()
        raise
    try:
        await web.SockSite(runner, sock).start()
        shown = f"[{address}]" if address.version == 6 else str(address)
        base_url = f"http://{shown}:{sock.getsockname()[1]}"
        logger.info("miniweb: serving %d articles of %r at %s", len(wiki), corpus, base_url)
        if on_ready is not None:
            on_ready(base_url, wiki)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        sock.close()

