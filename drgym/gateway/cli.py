"""``drgym serve``: the command line of the tool gateway (options follow the env's names)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Serve search, page reading, the cache/record/replay store, rate limits and budgets to every trainer process
and node. Clients use it with `search="gateway:http://HOST:PORT"` (searches and page reads both go through it),
so N processes x M envs share one rate limit, one budget and one cache.

Safety: it binds 127.0.0.1 unless --host says otherwise; any other address needs --token (or
DRGYM_GATEWAY_TOKEN), which clients send as search_kwargs={"token": ...} or in DRGYM_GATEWAY_TOKEN; a wrong or
missing token gets HTTP 401 and nothing is done. Pages are fetched behind the SSRF guard here, so no client can
make the gateway read an internal address. Request bodies over 1 MiB get HTTP 413. API keys (read from the
providers' variables, e.g. SERPER_API_KEY, or --search-kwargs) never appear in a log, a response or an error.

Operating it: GET /health (no token needed) and GET /metrics (Prometheus text format: requests by endpoint and
outcome, errors by kind, latency, cache hits, provider calls and failures, estimated spend, budget used,
rate-limit waits, requests queued and their waits, event-loop lag). SIGTERM or SIGINT stops accepting, finishes the requests in flight and closes the store;
every answer it sent was committed to the store first, so even kill -9 loses none. Clients retry a restarting
gateway with backoff; one that stays down becomes an error observation, never a crashed episode.

Load: --max-in-flight requests are worked on at once and up to --max-queue more wait in a first-come queue
(searches and page reads each have their own, so a search never waits behind page extraction);
a request's work and its time budgets start with its turn, so thousands of episodes at once do not all pass
their page-read budgets together. A full queue answers HTTP 503 with Retry-After, which clients wait out and
retry (within their timeout_s, search_kwargs={"timeout_s": ...}, default 600 s)."""

_EPILOG = """\
examples:
  drgym serve --search local --corpus wiki-local --port 8765
  drgym serve --search serper,brave --rps 5 --budget 10000 --cache-path run.sqlite --cache-mode read-write
  drgym serve --search local --host 0.0.0.0 --token "$DRGYM_GATEWAY_TOKEN"
then: gym.make("drgym/WebResearch-v0", search="gateway:http://127.0.0.1:8765")"""


def register(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Add ``serve`` to the ``drgym`` command; returns its handler."""
    p = sub.add_parser(
        "serve", help="run the tool gateway that many processes share", description=_DESCRIPTION,
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--search", default="local",
                   help="backend name, or a failover chain joined by commas (local | miniweb | serper,brave | ...)")
    p.add_argument("--corpus", default=None, help="corpus of the local and miniweb backends (default wiki-local)")
    p.add_argument("--search-kwargs", default=None, metavar="JSON",
                   help='backend options as JSON, e.g. \'{"base_url": "http://127.0.0.1:8888"}\' (a chain: by name)')
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one, printed)")
    p.add_argument("--token", default=None, help="shared token clients must send (default: DRGYM_GATEWAY_TOKEN)")
    p.add_argument("--rps", type=float, default=None,
                   help="upstream search requests per second for all clients together, retries included")
    p.add_argument("--burst", type=float, default=None, help="upstream requests at once after a quiet spell")
    p.add_argument("--budget", type=int, default=None, help="provider calls all clients may make together")
    p.add_argument("--budget-per-episode", type=int, default=None, help="provider calls one episode may make")
    p.add_argument("--cache-path", default=None, help="SQLite file of the search/page store")
    p.add_argument("--cache-mode", default=None, choices=["off", "read-write", "record", "replay"],
                   help="how the store is used (default: read-write when --cache-path is given)")
    p.add_argument("--reader", default="lexical",
                   help="how pages are read for clients: lexical (no LLM) or an LLM spec (openai:URL, ...)")
    p.add_argument("--max-in-flight", type=int, default=256, metavar="N",
                   help="tool requests worked on at once (default 256), in each of two lanes: searches, and page "
                        "reads (open, browse), so searches never queue behind page extraction; the rest wait their "
                        "turn, first come first served, and their time budgets start with their turn")
    p.add_argument("--max-queue", type=int, default=8192, metavar="N",
                   help="requests that may wait for a turn, per lane (default 8192); past that the gateway answers HTTP 503 "
                        "with Retry-After (the time the queue takes to drain), which clients wait out and retry")
    return {"serve": _cmd_serve}


def _cmd_serve(args: argparse.Namespace) -> int:
    from drgym.errors import ConfigError
    from drgym.gateway.server import TOKEN_ENV, run
    from drgym.gateway.services import GatewayConfig

    names = tuple(n.strip() for n in args.search.split(",") if n.strip())
    if not names:
        raise ConfigError("--search names no backend")
    try:
        kwargs = json.loads(args.search_kwargs) if args.search_kwargs else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--search-kwargs is not JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError("--search-kwargs must be a JSON object")
    config = GatewayConfig(
        search=names[0] if len(names) == 1 else names,
        corpus=args.corpus,
        search_kwargs=kwargs,
        rps=args.rps,
        burst=args.burst,
        budget_global=args.budget,
        budget_per_episode=args.budget_per_episode,
        cache_path=args.cache_path,
        cache_mode=args.cache_mode,
        reader=args.reader,
    )
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    return run(
        config, host=args.host, port=args.port, token=token, max_in_flight=args.max_in_flight,
        max_queue=args.max_queue,
    )
