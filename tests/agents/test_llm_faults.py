"""LLM agents against OpenAI-compatible servers that misbehave: every fault ends the episode gracefully.

The servers are real aiohttp apps on loopback speaking the chat-completions JSON schema; the client is drgym's
``OpenAIChatClient`` with a short timeout and a small retry budget, so each case finishes within a second.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import web

from drgym.agents.prompt_baseline import PromptAgent
from drgym.agents.rag_baseline import RAGAgent
from drgym.llm.openai import OpenAIChatClient
from drgym.retry import RetryPolicy
from drgym.runner import arun_episode, arun_episodes

TIDAL = {"index": 0}


def _completion(content: Any, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.json_response(body, status=status)


def _app(replies: list[Any]) -> web.Application:
    """A server answering call ``i`` with ``replies[i]`` (the last one repeats): a function building a
    response, a dict body (200), or a number of seconds to stall before answering."""
    calls: list[dict] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(await request.json())
        reply = replies[min(len(calls) - 1, len(replies) - 1)]
        if isinstance(reply, (int, float)):
            await asyncio.sleep(reply)
            return web.json_response(_completion("<answer>late</answer>"))
        if isinstance(reply, dict):
            return web.json_response(reply)
        return reply()

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def _client(url: str) -> OpenAIChatClient:
    retry = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, max_total_s=2.0)
    return OpenAIChatClient(url, "m", timeout=0.5, retry=retry)


FAULTS = {
    "http-500": ([lambda: web.Response(status=500, text="upstream exploded")], "HTTP 500"),
    "http-503-json": ([lambda: _error(503, "overloaded")], "overloaded"),
    "http-400": ([lambda: _error(400, "temperature must be <= 2")], "HTTP 400"),
    "http-401": ([lambda: _error(401, "bad key")], "check the API key"),
    "http-404": ([lambda: web.Response(status=404, text="no route")], "check base_url"),
    "http-429": ([lambda: web.Response(status=429, headers={"Retry-After": "3600"}, text="slow down")],
                 "Retry-After"),
    "timeout": ([5.0], "no answer within the timeout"),
    "not-json": ([lambda: web.Response(status=200, text="<html>proxy error</html>")], "malformed JSON"),
    "no-choices": ([{"object": "chat.completion", "choices": []}], "no choices"),
    "null-content": ([_completion(None, "content_filter")], "without content"),
}


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
async def test_server_faults_end_the_episode_with_an_answer(make_env, serve, fault) -> None:
    replies, message = FAULTS[fault]
    url = await serve(_app(replies))
    client = _client(url)
    agent = PromptAgent(llm=client)
    started = time.perf_counter()
    traj = await asyncio.wait_for(arun_episode(make_env(), agent, options=TIDAL), 20)
    await client.aclose()
    assert time.perf_counter() - started < 10
    assert traj.error is None and traj.terminated and traj.answer == "unknown" and traj.reward == 0.0
    assert agent.episode_stats["llm_errors"] == 1
    assert message in agent.episode_stats["last_error"], agent.episode_stats["last_error"]
    assert "The language model failed" in traj.turns[0].action


async def test_an_unreachable_server_ends_the_episode_with_an_answer(make_env) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1")
    for agent in (PromptAgent(llm=client), RAGAgent(llm=client)):
        traj = await arun_episode(make_env(), agent, options=TIDAL)
        assert traj.error is None and traj.answer == "unknown"
        assert "cannot reach" in agent.episode_stats["last_error"]
    await client.aclose()


async def test_empty_and_truncated_completions(make_env, serve) -> None:
    cut = '<think>search</think><tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock'
    url = await serve(_app([_completion(cut, "length"), _completion(""), _completion(""),
                            _completion("<think>x</think><answer>Ilse Varrow", "stop")]))
    client = _client(url)
    traj = await arun_episode(make_env(), PromptAgent(llm=client), options=TIDAL)
    await client.aclose()
    assert traj.turns[0].arguments == {"query": ["tidal clock"]}
    # the empty reply was asked for again, and still empty: the env scores the broken format
    assert len(traj.turns) == 2 and not traj.turns[1].format_ok and traj.reward == -1.0


async def test_broken_json_in_the_tool_call_is_repaired_or_explained(make_env, serve) -> None:
    url = await serve(_app([
        _completion("<think>a</think><tool_call>{'name': 'web_search', 'arguments': "
                    "{'query': ['tidal clock',]}}</tool_call>"),
        _completion('<think>b</think><tool_call>{"name": "web_search", "arguments": {query: tidal}}'
                    "</tool_call>"),
        _completion("<think>c</think><answer>Ilse Varrow</answer>"),
    ]))
    client = _client(url)
    traj = await arun_episode(make_env(), PromptAgent(llm=client), options=TIDAL)
    await client.aclose()
    assert traj.turns[0].tool == "web_search"
    assert traj.turns[1].tool is None and "Invalid tool call" in traj.turns[1].observation
    assert traj.reward == 1.0


async def test_the_context_overflow_error_of_an_openai_server_is_recovered_from(make_env, serve) -> None:
    def too_long() -> web.Response:
        return _error(400, "This model's maximum context length is 4096 tokens.", "context_length_exceeded")

    url = await serve(_app([too_long, too_long]))
    client = _client(url)
    agent = PromptAgent(llm=client)
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    await client.aclose()
    assert traj.error is None and traj.answer == "unknown"
    assert agent.episode_stats["overflow_answers"] == 1 and agent.episode_stats["llm_errors"] == 0


async def test_one_failing_server_does_not_stop_a_batch(make_env, serve, demo_answers) -> None:
    """Half the agents talk to a dead server, half to a working one: every episode finishes."""
    async def answer_each_question(request: web.Request) -> web.Response:
        body = await request.json()
        question = body["messages"][1]["content"]
        return web.json_response(_completion(f"<answer>{demo_answers[question]}</answer>"))

    good_app = web.Application()
    good_app.router.add_post("/v1/chat/completions", answer_each_question)
    good_url = await serve(good_app)
    bad_url = await serve(_app([lambda: web.Response(status=500, text="down")]))
    clients = [_client(good_url), _client(bad_url)]
    made = iter(range(1000))

    def make_agent() -> PromptAgent:
        return PromptAgent(llm=clients[next(made) % 2])

    trajs = await arun_episodes(make_env, make_agent, [{"index": i % 22} for i in range(16)], concurrency=4)
    for client in clients:
        await client.aclose()
    assert len(trajs) == 16 and all(t.error is None and t.terminated for t in trajs)
    rewards = sorted({t.reward for t in trajs})
    assert rewards == [0.0, 1.0]
    assert json.dumps([t.to_dict() for t in trajs])  # every trajectory is serialisable
