"""Fixtures: a gateway served on the test's own event loop, and the counting upstream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from drgym.gateway.server import serve
from drgym.gateway.services import GatewayConfig, GatewayServices
from tests.gateway.upstream import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture
async def run_gateway() -> AsyncIterator[Callable[..., Any]]:
    """``url = await run_gateway(GatewayConfig(...), token=...)``: served here until the test ends."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(config: GatewayConfig | GatewayServices, **kwargs: Any) -> str:
        stop = asyncio.Event()
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(config, port=0, stop=stop, on_ready=ready.set_result, **kwargs))
        running.append((stop, task))
        done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the reason it did not start
        return ready.result()

    yield start
    for stop, task in running:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def searxng(upstream: Upstream, **kwargs: Any) -> GatewayConfig:
    """A gateway over the counting upstream's SearxNG API."""
    options = {"base_url": upstream.url, "language": None}
    return GatewayConfig(search="searxng", search_kwargs=options, **kwargs)
