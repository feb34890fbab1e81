"""Chat-client throughput: the OpenAI-compatible HTTP client, and micro-batched local generation.

1. HTTP client overhead. A loopback server (its own event loop in a thread) answers every
   ``/v1/chat/completions`` at once with a fixed, schema-valid reply, so the figures are the client's own cost:
   requests per second and latency percentiles at several concurrency levels, for ``OpenAIChatClient`` (one
   shared session) and for a naive client that opens a session per request.
2. Local generation. The tiny model behind ``TransformersChatClient``: completions per second when requests
   arrive one at a time versus concurrently (micro-batched), and end to end through drgym's server.

    python -m benchmarks.perf.llm_client [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from drgym.llm.openai import OpenAIChatClient

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
REPLY = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "<answer>Paris</answer>"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}


class _ThreadServer:
    """An aiohttp app served from its own loop in a daemon thread (so client and server do not share a loop)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # the port the OS picked
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


async def _canned(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(REPLY)


async def _drive(call: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(range(total))

    async def worker() -> None:
        while queue:
            queue.pop()
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "req_per_s": total / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


async def http_overhead(total: int, levels: list[int]) -> list[tuple[str, int, dict[str, float]]]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _canned)
    server = _ThreadServer(app)
    rows = []
    try:
        client = OpenAIChatClient(server.url, "bench", max_concurrency=max(levels))
        await client.complete(MESSAGES)  # warm the session
        for level in levels:
            rows.append(("OpenAIChatClient", level, await _drive(lambda: client.complete(MESSAGES), total, level)))
        await client.aclose()

        async def per_request_session() -> Any:
            async with aiohttp.ClientSession() as session, session.post(
                f"{server.url}/chat/completions", json={"model": "bench", "messages": MESSAGES}
            ) as resp:
                return await resp.json()

        for level in levels:
            rows.append(("session per request", level, await _drive(per_request_session, total, level)))
    finally:
        server.close()
    return rows


async def local_generation(requests: int, max_tokens: int) -> list[tuple[str, dict[str, float]]]:
    from drgym.llm.local import TransformersChatClient
    from drgym.llm.server import create_app
    from drgym.llm.tiny import tiny_causal_lm

    model, tokenizer = tiny_causal_lm()
    rows = []
    for label, batch, concurrency in (("sequential, batch 1", 1, 1), ("concurrent, micro-batched", 16, 16)):
        client = TransformersChatClient(model, tokenizer, max_new_tokens=max_tokens, max_batch_size=batch)
        await client.complete(MESSAGES)  # warm up
        stats = await _drive(lambda c=client: c.complete(MESSAGES), requests, concurrency)
        stats["batches"] = client.stats["batches"] - 1
        rows.append((label, stats))
    client = TransformersChatClient(model, tokenizer, max_new_tokens=max_tokens, max_batch_size=16)
    server = _ThreadServer(create_app(client, "tiny"))
    try:
        http = OpenAIChatClient(server.url, "tiny")
        await http.complete(MESSAGES)
        stats = await _drive(lambda: http.complete(MESSAGES), requests, 16)
        stats["batches"] = client.stats["batches"] - 1
        rows.append(("HTTP via drgym server, 16 in flight", stats))
        await http.aclose()
    finally:
        server.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with few requests")
    parser.add_argument("--requests", type=int, default=None, help="requests per HTTP measurement")
    args = parser.parse_args(argv)
    total = args.requests or (200 if args.quick else 3000)
    levels = [1, 16] if args.quick else [1, 16, 64]
    gen_requests, gen_tokens = (16, 8) if args.quick else (128, 32)

    rows = asyncio.run(http_overhead(total, levels))
    print(f"HTTP client overhead, {total} requests against an instant loopback server")
    print(f"{'client':<22}{'in flight':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, level, s in rows:
        print(f"{name:<22}{level:>10}{s['req_per_s']:>10.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}")

    gen = asyncio.run(local_generation(gen_requests, gen_tokens))
    print(f"\nTiny model, {gen_requests} completions of up to {gen_tokens} tokens")
    print(f"{'mode':<38}{'compl/s':>9}{'p50 ms':>9}{'batches':>9}")
    for name, s in gen:
        print(f"{name:<38}{s['req_per_s']:>9.1f}{s['p50_ms']:>9.1f}{s['batches']:>9.0f}")


if __name__ == "__main__":
    main()
