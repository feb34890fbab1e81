"""``drgym serve``: one tool gateway (search, page reading, store, limits, budgets) shared by many processes.

Run ``drgym serve --search local --port 8765`` and build envs with ``search="gateway:http://127.0.0.1:8765"``:
every process and machine that does so shares one rate limit, one budget and one cache. Names are imported
on first use, so a client never imports the server's dependencies (``prometheus_client``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GatewayBackend",
    "GatewayBrowser",
    "GatewayConfig",
    "GatewayEpisode",
    "GatewayServices",
    "build_app",
    "serve",
]

_WHERE = {
    "GatewayBackend": "drgym.gateway.client",
    "GatewayBrowser": "drgym.gateway.client",
    "GatewayEpisode": "drgym.gateway.client",
    "GatewayConfig": "drgym.gateway.services",
    "GatewayServices": "drgym.gateway.services",
    "build_app": "drgym.gateway.server",
    "serve": "drgym.gateway.server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'drgym.gateway' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
