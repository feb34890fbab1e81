"""The MBE judge against a loopback OpenAI-compatible server that answers with canned judge replies."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from drgym.benchmarks.judge import (
    JUDGE_PROMPT,
    Judge,
    JudgeUnavailable,
    VerdictCache,
    judge_prompt,
    parse_verdict,
)
from drgym.benchmarks.run import BenchConfig, arun_bench
from drgym.llm.openai import OpenAIChatClient
from drgym.retry import RetryPolicy

CORRECT = '```json\n{"rationale": "Same person, full name.", "judgement": "correct"}\n```'
INCORRECT = '{"rationale": "A different city.", "judgement": "incorrect"}'
GARBAGE = "I think it is probably right, but I cannot say."


@dataclass
class JudgeServer:
    """What the server was asked, and the replies it gives in turn (the last one repeats)."""

    replies: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)

    def next_reply(self) -> str:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def _app(state: JudgeServer) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        state.requests.append(body)
        text = state.next_reply()
        return web.json_response(
            {
                "id": f"chatcmpl-{len(state.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
            }
        )

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "judge-mini", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """Start a judge server with the given replies; returns (state, client)."""
    servers: list[TestServer] = []
    clients: list[OpenAIChatClient] = []

    async def start(*replies: str) -> tuple[JudgeServer, OpenAIChatClient]:
        state = JudgeServer(list(replies))
        server = TestServer(_app(state), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = OpenAIChatClient(str(server.make_url("/v1")), "judge-mini", retry=RetryPolicy.never())
        clients.append(client)
        return state, client

    yield start
    for client in clients:
        await client.aclose()
    for server in servers:
        await server.close()


Q, GOLDS = "Who invented the tidal clock?", ["Ilse Varrow"]


async def test_correct_and_incorrect_verdicts(serve) -> None:
    state, client = await serve(CORRECT)
    judge = Judge(client, "judge-mini")
    verdict = await judge.verdict(Q, GOLDS, "Ilse M. Varrow")
    assert (verdict.correct, verdict.how, verdict.requests) == (True, "judge", 1)
    assert verdict.rationale == "Same person, full name."
    sent = state.requests[0]
    assert sent["model"] == "judge-mini" and sent["temperature"] == 0.0
    assert sent["messages"] == [{"role": "user", "content": judge_prompt(Q, GOLDS, "Ilse M. Varrow")}]
    assert 'ground truth answers: ["Ilse Varrow"]' in sent["messages"][0]["content"]

    state, client = await serve(INCORRECT)
    verdict = await Judge(client, "judge-mini").verdict(Q, GOLDS, "Amberfold")
    assert (verdict.correct, verdict.how) == (False, "judge")


async def test_garbage_then_valid_is_asked_again(serve) -> None:
    state, client = await serve(GARBAGE, INCORRECT)
    judge = Judge(client, "judge-mini", max_attempts=3)
    verdict = await judge.verdict(Q, GOLDS, "Marten Quill")
    assert (verdict.correct, verdict.requests) == (False, 2)
    retry = state.requests[1]["messages"]
    assert retry[1] == {"role": "assistant", "content": GARBAGE}
    assert "could not be read" in retry[2]["content"]
    assert judge.stats.failures == 0 and judge.stats.requests == 2


async def test_always_garbage_is_a_judge_failure_never_correct(serve, tmp_path: Path) -> None:
    state, client = await serve(GARBAGE)
    cache = VerdictCache(tmp_path / "cache.sqlite")
    judge = Judge(client, "judge-mini", cache=cache, max_attempts=3)
    verdict = await judge.verdict(Q, GOLDS, "Marten Quill")
    assert verdict.correct is None and verdict.how == "failure"
    assert "no readable verdict after 3 attempts" in verdict.rationale
    assert len(state.requests) == 3 and judge.stats.failures == 1
    assert len(cache) == 0  # failures are not cached: a later run asks again


async def test_cache_hit_sends_no_second_request(serve, tmp_path: Path) -> None:
    state, client = await serve(CORRECT)
    path = tmp_path / "judge_cache.sqlite"
    judge = Judge(client, "judge-mini", cache=VerdictCache(path))
    first = await judge.verdict(Q, GOLDS, "Ilse M. Varrow")
    second = await judge.verdict(Q, GOLDS, "Ilse M. Varrow")
    assert (first.how, second.how, second.correct) == ("judge", "cache", True)
    assert len(state.requests) == 1
    judge.cache.close()

    reopened = Judge(client, "judge-mini", cache=VerdictCache(path))  # a later run, same folder
    assert (await reopened.verdict(Q, GOLDS, "Ilse M. Varrow")).how == "cache"
    other_model = Judge(client, "another-judge", cache=VerdictCache(path))  # a different judge asks anew
    assert (await other_model.verdict(Q, GOLDS, "Ilse M. Varrow")).how == "judge"
    assert len(state.requests) == 2


async def test_exact_matches_and_missing_answers_send_no_request(serve) -> None:
    state, client = await serve(CORRECT)
    judge = Judge(client, "judge-mini")
    exact = await judge.verdict(Q, GOLDS, "ilse varrow.")
    squad_exact = await judge.verdict("Which band?", ["Beatles"], "The Beatles")  # SQuAD drops articles
    none = await judge.verdict(Q, GOLDS, None)
    assert (exact.correct, exact.how) == (True, "exact")
    assert (squad_exact.correct, squad_exact.how) == (True, "exact")
    assert (none.correct, none.how) == (False, "no_answer")
    assert state.requests == []
    assert (judge.stats.exact, judge.stats.no_answer) == (2, 1)


async def test_batch_keeps_order_and_counts(serve) -> None:
    state, client = await serve(CORRECT)
    judge = Judge(client, "judge-mini", concurrency=2)
    items = [(Q, GOLDS, "Ilse Varrow"), (Q, GOLDS, "I. Varrow"), (Q, GOLDS, None), ("Q2?", ["x"], "y")]
    verdicts = await judge.verdicts(items)
    assert [v.how for v in verdicts] == ["exact", "judge", "no_answer", "judge"]
    assert len(state.requests) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_missing_endpoint_makes_the_batch_unavailable_after_one_request() -> None:
    client = OpenAIChatClient(
        f"http://127.0.0.1:{_closed_port()}/v1", "judge-mini", retry=RetryPolicy.never()
    )
    judge = Judge(client, "judge-mini")
    try:
        with pytest.raises(JudgeUnavailable, match="the judge endpoint did not answer"):
            await judge.verdicts([(Q, GOLDS, "Ilse Varrow"), (Q, GOLDS, "someone"), (Q, GOLDS, "other")])
    finally:
        await client.aclose()
    assert judge.stats.exact == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"rationale": "ok", "judgement": "correct"}', True),
        ('Sure.\n```json\n{"rationale": "no {match}", "judgement": "Incorrect"}\n```', False),
        ('{"rationale": "x", "judgment": "correct."}', True),
        ('{"verdict": false}', False),
        ('notes {"a": 1} then {"rationale": "r", "judgement": "correct"}', True),
    ],
)
def test_parse_verdict_reads_what_judges_write(reply: str, expected: bool) -> None:
    assert parse_verdict(reply)[0] is expected


@pytest.mark.parametrize("reply", [GARBAGE, '{"rationale": "r", "judgement": "maybe"}', "{broken", ""])
def test_parse_verdict_rejects_unreadable_replies(reply: str) -> None:
    with pytest.raises(ValueError, match="no JSON verdict in the judge's reply"):
        parse_verdict(reply)


def test_prompt_asks_for_rationale_and_verdict_as_json() -> None:
    text = judge_prompt("Q?", ["a", "b"], "c")
    assert 'ground truth answers: ["a", "b"]' in text and "pred_answer: c" in text
    assert '"rationale"' in text and '"judgement"' in text and "correct or incorrect" in text
    assert JUDGE_PROMPT.count("{question}") == 1


def test_a_corrupt_cache_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "judge_cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = VerdictCache(path)
    key = VerdictCache.key("m", "q", ["g"], "p")
    cache.put(key, "m", "q", ["g"], "p", True, "fine")
    assert cache.get(key) == (True, "fine")
    cache.close()
    aside = list(tmp_path.glob("judge_cache.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")


def _bench(out: Path, judge: str) -> BenchConfig:
    return BenchConfig(
        agents="scripted",
        datasets="demo",
        limit=None,
        out=str(out),
        no_progress=True,
        no_plot=True,
        resamples=100,
        judge=judge,
        judge_model="judge-mini",
    )


async def test_a_run_with_a_judge_reports_mbe(serve, tmp_path: Path) -> None:
    state, client = await serve(CORRECT)
    url = str(client.base_url)
    result = await arun_bench(_bench(tmp_path, f"openai:{url}"))
    scores = result.scores
    assert scores["mbe"]["computed"] is True
    agent = scores["agents"]["scripted"]
    stats = scores["mbe"]["judge"]
    assert stats["requests"] == len(state.requests) > 0
    assert stats["exact"] + stats["requests"] + stats["no_answer"] == agent["episodes"]
    # The canned judge calls every non-exact answer correct, so MBE counts exact matches and judged ones.
    assert agent["scores"]["mbe"]["demo"]["mean"] == pytest.approx(
        (stats["exact"] + stats["requests"]) / agent["episodes"]
    )
    assert agent["scores"]["mbe"]["demo"]["mean"] >= agent["scores"]["em"]["demo"]["mean"]
    report = (tmp_path / "report.md").read_text()
    assert "## MBE (LLM judge)" in report and "Judge `judge-mini`:" in report

    again = await arun_bench(_bench(tmp_path, f"openai:{url}"))  # verdicts come from the run's cache
    assert len(state.requests) == stats["requests"]
    assert again.scores["agents"]["scripted"]["scores"] == scores["agents"]["scripted"]["scores"]


async def test_a_run_with_a_missing_judge_reports_mbe_not_computed(tmp_path: Path) -> None:
    result = await arun_bench(_bench(tmp_path, f"openai:http://127.0.0.1:{_closed_port()}/v1"))
    assert result.scores["mbe"]["computed"] is False
    assert "the judge endpoint did not answer" in result.scores["mbe"]["reason"]
    assert "mbe" not in result.scores["agents"]["scripted"]["scores"]
    assert "Not computed: the judge endpoint did not answer" in (tmp_path / "report.md").read_text()
