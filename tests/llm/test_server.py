"""drgym's OpenAI-compatible server, spoken to with plain HTTP: the schema, the error format, the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgym.errors import LLMError
from drgym.llm.server import create_app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def tiny_url(serve, tiny_lm) -> str:
    from drgym.llm.local import TransformersChatClient

    return await serve(create_app(TransformersChatClient(*tiny_lm, max_new_tokens=6, max_context=128), "tiny"))


async def _post(url: str, body: Any, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": raw, "headers": {"Content-Type": "application/json"}} if raw is not None else {"json": body}
        async with session.post(f"{url}/chat/completions", **kwargs) as resp:
            return resp.status, await resp.json()


async def test_chat_completion_follows_the_openai_schema(tiny_url) -> None:
    status, data = await _post(tiny_url, {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 4, "seed": 1, "logprobs": True})
    assert status == 200
    assert data["object"] == "chat.completion" and data["model"] == "tiny" and data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = data["usage"]
    assert 1 <= usage["completion_tokens"] <= 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len(choice["logprobs"]["content"]) == usage["completion_tokens"]


async def test_content_parts_are_accepted(tiny_url) -> None:
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    status, data = await _post(tiny_url, {"messages": [{"role": "user", "content": parts}], "max_tokens": 2})
    assert status == 200, data


async def test_models_endpoint(tiny_url) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{tiny_url}/models") as resp:
        data = await resp.json()
    assert [m["id"] for m in data["data"]] == ["tiny"]


@pytest.mark.parametrize(
    ("body", "raw", "status", "message", "code"),
    [
        (None, b"{oops", 400, "not valid JSON", None),
        ([1, 2], None, 400, "must be a JSON object", None),
        ({"messages": []}, None, 400, "'messages' must be a non-empty list", None),
        ({"messages": [{"content": "x"}]}, None, 400, r"messages\[0\] must be an object with a 'role'", None),
        ({"messages": [{"role": "user", "content": "x"}], "stream": True}, None, 400, "streaming is not supported",
         None),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, None, 400, "only n=1", None),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -3}, None, 400, "temperature must be", None),
        ({"messages": [{"role": "user", "content": "x" * 300}]}, None, 400, "maximum context length",
         "context_length_exceeded"),
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, None, 404, "does not exist",
         "model_not_found"),
    ],
    ids=["bad-json", "not-object", "no-messages", "no-role", "stream", "n", "bad-option", "too-long", "model"],
)
async def test_errors_use_the_openai_error_shape(tiny_url, body, raw, status, message, code) -> None:
    got_status, data = await _post(tiny_url, body, raw=raw)
    assert got_status == status
    assert set(data["error"]) == {"message", "type", "param", "code"}
    assert re.search(message, data["error"]["message"]), data
    assert data["error"]["code"] == code


async def test_backend_failure_is_a_500_in_openai_shape(serve) -> None:
    # The server fronting another server that is down (a proxy over an OpenAIChatClient).
    from drgym.llm.openai import OpenAIChatClient
    from drgym.retry import RetryPolicy

    upstream = OpenAIChatClient(f"http://127.0.0.1:{_free_port()}/v1", "m", retry=RetryPolicy.never())
    url = await serve(create_app(upstream, "m"))
    status, data = await _post(url, {"messages": [{"role": "user", "content": "x"}]})
    await upstream.aclose()
    assert status == 500
    assert data["error"]["type"] == "server_error"
    assert re.search(r"cannot reach http://127\.0\.0\.1:\d+/v1/chat/completions", data["error"]["message"])


async def test_unknown_route_is_a_json_404(tiny_url) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{tiny_url}/completions", json={}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_command_line_serves_the_tiny_model() -> None:
    from drgym.llm.openai import OpenAIChatClient
    from drgym.retry import RetryPolicy

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drgym.llm.server", "--model", "tiny", "--port", str(port), "--max-new-tokens", "3",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    client = OpenAIChatClient(f"http://127.0.0.1:{port}/v1", retry=RetryPolicy.never())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                result = await client.complete([{"role": "user", "content": "hi"}])
                break
            except LLMError:
                if proc.returncode is not None or time.monotonic() > deadline:
                    stderr = (await proc.stderr.read()).decode() if proc.returncode is not None else ""
                    raise AssertionError(f"the server did not start: {stderr}") from None
                await asyncio.sleep(0.3)
        assert client.model == "tiny"
        assert 1 <= result.tokens <= 3
    finally:
        await client.aclose()
        proc.terminate()
        await proc.wait()
