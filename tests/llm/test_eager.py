"""Request bodies written at once: the started-coroutine wrapper, and a request on the wire before the loop's
next pass (checked against a real aiohttp server running on its own thread, so a blocked client loop cannot
hide a late write)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from drgym.llm._eager import StartedCoroutine
from drgym.llm.openai import OpenAIChatClient

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]

# -- the wrapper ------------------------------------------------------------------------------------------------


async def test_a_coroutine_that_never_suspends_has_finished_when_wrapped() -> None:
    done: list[str] = []

    async def write() -> int:
        done.append("written")
        return 7

    started = StartedCoroutine(write())
    assert done == ["written"]  # before anything awaited it
    assert await started == 7
    assert await asyncio.ensure_future(StartedCoroutine(write())) == 7  # as a task, the way aiohttp runs it


async def test_the_first_step_runs_now_and_the_rest_when_awaited() -> None:
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def write() -> str:
        steps.append("headers and body")
        await gate  # e.g. the socket's buffer is full
        steps.append("end of body")
        return "ok"

    task = asyncio.ensure_future(StartedCoroutine(write()))
    assert steps == ["headers and body"]
    await asyncio.sleep(0)
    assert not task.done() and steps == ["headers and body"]
    gate.set_result(None)
    assert await task == "ok" and steps == ["headers and body", "end of body"]


async def test_an_error_in_the_first_step_reaches_whoever_awaits() -> None:
    async def broken() -> None:
        raise ConnectionResetError("peer went away")

    started = StartedCoroutine(broken())  # no exception yet
    with pytest.raises(ConnectionResetError, match="peer went away"):
        await asyncio.ensure_future(started)


async def test_cancelling_the_task_interrupts_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []

    async def write() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("closed")

    task = asyncio.ensure_future(StartedCoroutine(write()))
    task.cancel()  # before the task's first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["closed"]


# -- through the chat client -----------------------------------------------------------------------------------


@pytest.fixture
def threaded_server() -> Iterator[tuple[str, list[Any], threading.Event]]:
    """An OpenAI-style server on its own thread and loop; yields its URL, the bodies it got, and an event
    set as each request has fully arrived."""
    bodies: list[Any] = []
    arrived = threading.Event()
    ready: list[str] = []
    loop = asyncio.new_event_loop()

    async def chat(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        arrived.set()
        message = {"role": "assistant", "content": "Paris"}
        return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.append(f"http://127.0.0.1:{runner.addresses[0][1]}/v1")
        return runner

    runner = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield ready[0], bodies, arrived
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def test_a_request_is_on_the_wire_before_other_work_on_the_loop(threaded_server) -> None:
    url, bodies, arrived = threaded_server
    async with OpenAIChatClient(url, "m", temperature=0.0) as client:
        assert (await client.complete(MESSAGES)).text == "Paris"  # opens the connection the next call reuses
        arrived.clear()
        call = asyncio.ensure_future(client.complete(MESSAGES, max_tokens=5))

        async def other_episodes() -> bool:
            # Runs in the same loop pass, after the call above was built: a burst of other episodes' work.
            # Blocking here, the loop cannot run anything else; the request must already have been written.
            return arrived.wait(5.0)

        assert await asyncio.ensure_future(other_episodes()), "the request waited for the loop's next pass"
        assert (await call).text == "Paris"
    assert bodies[-1] == {"temperature": 0.0, "max_tokens": 5, "model": "m", "messages": MESSAGES,
                          "stream": False}


async def test_a_body_bigger_than_the_socket_buffer_arrives_whole(serve) -> None:
    big = "é" * (4 * 2**20)  # the write has to wait for the socket to drain, past the first step
    bodies: list[Any] = []

    async def chat(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        message = {"role": "assistant", "content": "ok"}
        return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v1/chat/completions", chat)
    async with OpenAIChatClient(await serve(app), "m") as client:
        results = await asyncio.gather(*(client.complete([{"role": "user", "content": big}]) for _ in range(3)))
    assert [r.text for r in results] == ["ok"] * 3
    assert [b["messages"][0]["content"] == big for b in bodies] == [True] * 3
