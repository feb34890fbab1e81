"""Fixtures for the LLM backend tests: the tiny real model, and loopback servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@pytest.fixture(scope="session")
def tiny_lm() -> tuple[Any, Any]:
    """One tiny model for the session (clients never modify weights); skips without torch/transformers."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from drgym.llm.tiny import tiny_causal_lm

    return tiny_causal_lm(seed=0)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    """Start aiohttp apps on loopback; returns ``await serve(app) -> base URL ending in /v1``."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()
