"""OpenAIChatClient against real loopback servers: drgym's own server over the tiny model, and aiohttp apps
that speak the OpenAI schema and inject faults (429, 5xx, 401, timeouts, bad bodies, context overflow)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import web

from drgym._loop import SyncRunner
from drgym.errors import ConfigError, LLMError
from drgym.llm.base import ContextOverflowError
from drgym.llm.openai import OpenAIChatClient
from drgym.retry import RetryPolicy

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=1.0, max_total_s=10.0, jitter=0.0)


def _reply(text: str = "Paris", finish_reason: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        **extra,
    }


def _app(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def _openai_error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.json_response(body, status=status)


# -- against drgym's server over the tiny model ---------------------------------------------------------------


async def test_tiny_loopback_server_completes_with_usage(serve, tiny_lm) -> None:
    from drgym.llm.local import TransformersChatClient
    from drgym.llm.server import create_app

    local = TransformersChatClient(*tiny_lm, max_new_tokens=8)
    url = await serve(create_app(local, "tiny"))
    async with OpenAIChatClient(url, "tiny", retry=FAST) as client:
        remote = await client.complete(MESSAGES, seed=4, temperature=0.7, logprobs=True)
        direct = await local.complete(MESSAGES, seed=4, temperature=0.7)
    assert remote.text == direct.text  # seed, temperature and max_tokens reached the model
    assert remote.tokens == direct.tokens == len(direct.token_ids)
    assert 1 <= remote.tokens <= 8
    assert remote.prompt_tokens == direct.prompt_tokens == len(local.encode(MESSAGES))
    assert remote.finish_reason == direct.finish_reason
    assert remote.extras["usage"]["total_tokens"] == remote.prompt_tokens + remote.tokens
    assert remote.logprobs == pytest.approx(direct.logprobs, abs=1e-5)
    assert remote.extras["attempts"] == 1


async def test_model_name_resolved_from_server(serve, tiny_lm) -> None:
    from drgym.llm.local import TransformersChatClient
    from drgym.llm.server import create_app

    url = await serve(create_app(TransformersChatClient(*tiny_lm, max_new_tokens=2), "tiny-served"))
    async with OpenAIChatClient(url, retry=FAST) as client:
        result = await client.complete(MESSAGES)
        assert client.model == "tiny-served"
        assert result.extras["model"] == "tiny-served"
        assert await client.list_models() == ["tiny-served"]


async def test_wrong_model_name_is_a_clear_error(serve, tiny_lm) -> None:
    from drgym.llm.local import TransformersChatClient
    from drgym.llm.server import create_app

    url = await serve(create_app(TransformersChatClient(*tiny_lm, max_new_tokens=2), "tiny"))
    async with OpenAIChatClient(url, "gpt-5", retry=FAST) as client:
        with pytest.raises(LLMError, match=r"HTTP 404 .*The model `gpt-5` does not exist.*check base_url"):
            await client.complete(MESSAGES)


async def test_context_overflow_through_the_server(serve, tiny_lm) -> None:
    from drgym.llm.local import TransformersChatClient
    from drgym.llm.server import create_app

    local = TransformersChatClient(*tiny_lm, max_context=64)
    url = await serve(create_app(local, "tiny"))
    async with OpenAIChatClient(url, "tiny", retry=FAST) as client:
        with pytest.raises(ContextOverflowError, match="maximum context length"):
            await client.complete([{"role": "user", "content": "x" * 200}])
        short = await client.complete([{"role": "user", "content": "hi"}], max_tokens=2)  # the server lives on
        assert short.tokens == 2


# -- fault injection --------------------------------------------------------------------------------------------


async def test_sampling_options_and_key_are_sent(serve, monkeypatch) -> None:
    seen: list[tuple[dict[str, Any], str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((await request.json(), request.headers.get("Authorization")))
        return web.json_response(_reply())

    monkeypatch.setenv("MY_KEY_VAR", "sk-secret-123")
    url = await serve(_app(handler))
    client = OpenAIChatClient(url, "m", api_key_env="MY_KEY_VAR", temperature=0.6, max_tokens=50)
    try:
        result = await client.complete(MESSAGES, max_tokens=7, stop=["</answer>"], seed=1, top_p=None)
    finally:
        await client.aclose()
    payload, auth = seen[0]
    assert payload == {"model": "m", "messages": MESSAGES, "temperature": 0.6, "max_tokens": 7,
                       "stop": ["</answer>"], "seed": 1, "stream": False}
    assert auth == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(client)
    assert (result.text, result.tokens, result.prompt_tokens, result.finish_reason) == ("Paris", 2, 11, "stop")


async def test_429_with_retry_after_is_retried_after_the_wait(serve) -> None:
    calls: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.3"})
        return web.json_response(_reply())

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        result = await client.complete(MESSAGES)
    assert result.text == "Paris"
    assert result.extras["attempts"] == 2
    assert calls[1] - calls[0] >= 0.29  # Retry-After honoured, though the backoff alone would be 0.01 s


async def test_retry_after_beyond_the_longest_wait_gives_up_at_once(serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"error": {"message": "quota"}}, status=429, headers={"Retry-After": "3600"})

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        with pytest.raises(LLMError, match=r"HTTP 429: quota.*Retry-After"):
            await client.complete(MESSAGES)
    assert calls == 1


async def test_500s_until_retries_are_exhausted(serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"error": {"message": "engine crashed"}}, status=500)

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        with pytest.raises(LLMError, match=r"HTTP 500: engine crashed.*3 attempts"):
            await client.complete(MESSAGES)
    assert calls == 3


async def test_503_then_success(serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503, text="loading") if calls < 3 else web.json_response(_reply())

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        assert (await client.complete(MESSAGES)).extras["attempts"] == 3


async def test_401_is_not_retried(serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return _openai_error(401, "Incorrect API key provided", code="invalid_api_key")

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", api_key="sk-wrong", retry=FAST) as client:
        with pytest.raises(LLMError, match=r"HTTP 401 .*Incorrect API key provided; check the API key") as info:
            await client.complete(MESSAGES)
    assert "sk-wrong" not in str(info.value)
    assert calls == 1


async def test_timeout_becomes_llm_error(serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3)
        return web.json_response(_reply())

    url = await serve(_app(handler))
    start = time.monotonic()
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0.0)
    async with OpenAIChatClient(url, "m", timeout=0.2, retry=policy) as client:
        with pytest.raises(LLMError, match=r"no answer within the timeout \(total=0.2s"):
            await client.complete(MESSAGES)
    assert calls == 2
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (json.dumps({"choices": []}).encode(), "returned no choices"),
        (json.dumps({"object": "chat.completion"}).encode(), "returned no choices"),
        (json.dumps(_reply(text=None, finish_reason="content_filter")).encode(),
         r"without content \(finish_reason='content_filter'\)"),
    ],
    ids=["malformed-json", "empty-choices", "missing-choices", "null-content"],
)
async def test_unusable_bodies_are_llm_errors(serve, body: bytes, message: str) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(body=body, content_type="application/json")

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        with pytest.raises(LLMError, match=message):
            await client.complete(MESSAGES)
    assert calls == 1


async def test_empty_string_content_is_a_completion(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(_reply(text="", finish_reason="stop"))

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m") as client:
        result = await client.complete(MESSAGES)
    assert (result.text, result.finish_reason) == ("", "stop")


@pytest.mark.parametrize(
    "response",
    [
        # vLLM's wording
        lambda: _openai_error(400, "This model's maximum context length is 32768 tokens. However, you requested "
                                   "40000 tokens (39000 in the messages, 1000 in the completion)."),
        # OpenAI's code
        lambda: _openai_error(400, "Your input exceeds the context window of this model.",
                              code="context_length_exceeded"),
        # an older flat vLLM error object
        lambda: web.json_response({"object": "error", "message": "This model's maximum context length is 4096 "
                                   "tokens.", "type": "BadRequestError", "code": 400}, status=400),
    ],
    ids=["vllm", "openai-code", "flat"],
)
async def test_context_length_400_is_context_overflow(serve, response) -> None:
    async def handler(request: web.Request) -> web.Response:
        return response()

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        with pytest.raises(ContextOverflowError, match=r"(context length|context window).*HTTP 400") as info:
            await client.complete(MESSAGES)
    assert isinstance(info.value, LLMError)


async def test_other_400_is_plain_llm_error(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return _openai_error(400, "temperature must be non-negative")

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", retry=FAST) as client:
        with pytest.raises(LLMError, match="temperature must be non-negative") as info:
            await client.complete(MESSAGES, temperature=-1)
    assert not isinstance(info.value, ContextOverflowError)


async def test_unreachable_server_fails_quickly_with_advice() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    async with OpenAIChatClient(f"http://127.0.0.1:{port}/v1", "m", retry=FAST) as client:
        with pytest.raises(LLMError, match=rf"cannot reach http://127.0.0.1:{port}/v1/chat/completions.*"
                                           r"python -m drgym.llm.server"):
            await client.complete(MESSAGES)
    assert time.monotonic() - start < 2.0


async def test_concurrency_limit_is_respected(serve) -> None:
    in_flight = peak = served = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, peak, served
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        served += 1
        return web.json_response(_reply())

    url = await serve(_app(handler))
    async with OpenAIChatClient(url, "m", max_concurrency=3) as client:
        results = await asyncio.gather(*(client.complete(MESSAGES) for _ in range(12)))
    assert len(results) == served == 12
    assert peak == 3


async def test_one_client_serves_several_event_loops(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(_reply())

    url = await serve(_app(handler))
    client = OpenAIChatClient(url, "m")
    here = await client.complete(MESSAGES)
    # The environment's sync API runs coroutines on a private loop in another thread: same client, new loop.
    runner = SyncRunner()
    there = await asyncio.to_thread(runner.run, client.complete(MESSAGES))
    again = await client.complete(MESSAGES)
    assert here.text == there.text == again.text == "Paris"
    await client.aclose()
    assert (await client.complete(MESSAGES)).text == "Paris"  # a closed client reopens lazily
    await client.aclose()
    runner.close()


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="base_url must be an http"):
        OpenAIChatClient("localhost:8000/v1", "m")
    with pytest.raises(ConfigError, match="max_concurrency"):
        OpenAIChatClient("http://localhost:8000/v1", "m", max_concurrency=0)
    with pytest.raises(ConfigError, match="timeout"):
        OpenAIChatClient("http://localhost:8000/v1", "m", timeout=-1)
    client = OpenAIChatClient("http://localhost:8000/v1/chat/completions/", "m")
    assert client.base_url == "http://localhost:8000/v1"


async def test_n_other_than_one_is_refused() -> None:
    client = OpenAIChatClient("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ConfigError, match="n=2"):
        await client.complete(MESSAGES, n=2)
