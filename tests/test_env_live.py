"""The env on live backends, end to end on loopback servers: providers, faults, budgets, failover, replay.

The provider server (tests/search/providers_server.py) speaks the Serper, Brave, Tavily and SearxNG APIs. Here
its hits link to article pages it serves itself, so an episode searches, reads a result page through the
SSRF-guarded fetcher and the extractor, and answers, with nothing but loopback sockets underneath.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from aiohttp import web

import drgym  # noqa: F401  (registers the env ids)
from drgym.miniweb import article_path
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search import registry
from drgym.web.opener import PageOpener
from tests.search import providers_server
from tests.search.providers_server import KEYS, Fault, ProviderServer

QUESTION = "Who designed the Kellport lighthouse?"
ANSWER = "Marta Quell"
FACT = "The Kellport lighthouse was designed by Marta Quell and first lit in 1871."
PROVIDERS = ("serper", "brave", "tavily", "searxng")


def search_turn(*queries: str) -> str:
    call = {"name": "web_search", "arguments": {"query": list(queries)}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


def browse_turn(*urls: str) -> str:
    call = {"name": "browse_webpage", "arguments": {"url_list": list(urls)}}
    return f"<think>read</think><tool_call>{json.dumps(call)}</tool_call>"


def answer_turn(answer: str) -> str:
    return f"<think>done</think><answer>{answer}</answer>"


def article_html(name: str) -> str:
    """A result page: the fact inside an article, amid navigation, sidebar, footer and a cookie banner."""
    return (
        f"<!DOCTYPE html><html><head><title>{name}</title><script>track('{name}')</script></head><body>"
        "<nav class='menu'><a href='/'>Home</a> <a href='/news'>News</a> <a href='/about'>About us</a></nav>"
        "<aside class='sidebar'><h3>Trending</h3>"
        "<ul><li><a href='/x'>Celebrity gossip roundup</a></li></ul></aside>"
        f"<main><article><h1>Lighthouses of the coast ({name})</h1>"
        "<p>The coast has many lighthouses, each with its own history and keepers, and visitors come every "
        "summer to climb them.</p>"
        f"<p>{FACT} Its lamp could be seen twenty miles out to sea.</p></article></main>"
        "<footer>Copyright Example Media. All rights reserved.</footer>"
        "<div class='cookie-consent'>We use cookies to personalise ads. <button>Accept</button></div>"
        "</body></html>"
    )


class PageServer(ProviderServer):
    """The provider server, whose ``/pages/<name>`` serves an article for any name (``missing-*``: 404)."""

    def __init__(self) -> None:
        super().__init__()
        self.page_requests: list[str] = []

    async def _page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.page_requests.append(name)
        if name.startswith("missing"):
            return web.Response(status=404, text="not found")
        return web.Response(text=article_html(name), content_type="text/html")


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PageServer]:
    async with PageServer() as srv:

        def hits(query: str, n: int) -> list[dict[str, str]]:
            slug = providers_server._slug(query)
            return [
                {
                    "title": f"Lighthouse history {i}",
                    "url": srv.page_url(f"{slug}-{i}"),
                    "snippet": f"About <b>{query}</b>: page {i}.",
                }
                for i in range(1, n + 1)
            ]

        # The server's hits now link to its own pages instead of example.org.
        monkeypatch.setattr(providers_server, "_hits", hits)
        yield srv



@pytest.fixture
def provider_kwargs(server: PageServer, opener: PageOpener) -> Callable[[str], dict[str, Any]]:
    def kwargs(provider: str, **extra: Any) -> dict[str, Any]:
        made: dict[str, Any] = {
            "base_url": server.base_url(provider),
            "page_opener": opener,
            "retry": RetryPolicy(
                max_attempts=3, base_delay=0.005, max_delay=0.1, max_total_s=3.0, rng=random.Random(0)
            ),
            "limiter": TokenBucket(1000.0, burst=100),
        }
        if provider in KEYS:
            made["api_key"] = KEYS[provider]
        return {**made, **extra}

    return kwargs


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    made: list[gym.Env] = []

    def make(**kwargs: Any) -> gym.Env:
        kwargs.setdefault("dataset", [{"question": QUESTION, "answers": [ANSWER]}])
        env = gym.make("drgym/WebResearch-v0", **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


async def close_stack(env: gym.Env) -> None:
    """Close the env's search stack (sessions on this test's loop; the recording's SQLite file)."""
    await env.unwrapped.backend.aclose()


async def play(env: gym.Env, *actions: str) -> list[tuple[str, float, bool, bool, dict[str, Any]]]:
    base = env.unwrapped
    await base.areset(options={"index": 0})
    return [await base.astep(action) for action in actions]


def result_urls(env: gym.Env) -> list[str]:
    return list(env.unwrapped._episode.seen_urls)


# ----------------------------------------------------------------------------- one episode per provider


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_episode_searches_browses_and_answers(
    provider: str, server: PageServer, provider_kwargs, make_env
) -> None:
    env = make_env(search=provider, search_kwargs=provider_kwargs(provider))
    base = env.unwrapped
    await base.areset(options={"index": 0})
    obs, reward, term, trunc, info = await base.astep(search_turn("kellport lighthouse designer"))
    assert info["error"] is None and not term and not trunc and reward == 0.0
    urls = result_urls(env)
    assert urls and all(u.startswith(server.page_url("")) for u in urls)
    assert urls[0] in obs and "Lighthouse history 1" in obs
    assert info["search_usage"]["calls"] == 1 and info["backend_errors"] == 0
    obs, _, _, _, info = await base.astep(browse_turn(urls[0]))
    assert info["pages_read"] == 1 and info["error"] is None
    assert "Marta Quell" in obs
    for junk in ("cookies", "Celebrity gossip", "All rights reserved", "About us", "track("):
        assert junk not in obs, f"boilerplate {junk!r} reached the policy"
    obs, reward, term, trunc, info = await base.astep(answer_turn(ANSWER))
    assert term and not trunc and reward == 1.0 and info["f1"] == 1.0
    assert len(server.seen(provider)) == 1 and len(server.page_requests) == 1
    await close_stack(env)


async def test_metered_spend_is_reported(server: PageServer, provider_kwargs, make_env) -> None:
    env = make_env(search="serper", search_kwargs=provider_kwargs("serper"))
    ((_, _, _, _, info),) = await play(env, search_turn("lighthouse a", "lighthouse b"))
    usage = info["search_usage"]
    assert usage["calls"] == 2 and usage["failures"] == 0 and usage["est_spend_usd"] == pytest.approx(0.002)
    await close_stack(env)


# ----------------------------------------------------------------------------- faults never kill an episode


async def test_429_with_retry_after_then_success(server: PageServer, provider_kwargs, make_env) -> None:
    server.fail("serper", Fault.status_code(429, retry_after="0.05"))
    env = make_env(search="serper", search_kwargs=provider_kwargs("serper"))
    ((obs, _, term, _, info),) = await play(env, search_turn("kellport lighthouse"))
    assert info["error"] is None and info["backend_errors"] == 0 and not term
    assert "Lighthouse history 1" in obs
    assert len(server.seen("serper")) == 2, "one 429, then the retry after Retry-After"
    await close_stack(env)


async def test_persistent_503_becomes_the_observation(server: PageServer, provider_kwargs, make_env) -> None:
    server.fail("serper", *[Fault.status_code(503) for _ in range(3)])
    env = make_env(search="serper", search_kwargs=provider_kwargs("serper"))
    (obs, reward, term, trunc, info), (obs2, _, _, _, info2), (_, reward3, term3, _, info3) = await play(
        env, search_turn("kellport lighthouse"), search_turn("kellport lighthouse"), answer_turn(ANSWER)
    )
    assert not term and not trunc and reward == 0.0
    assert obs.startswith("<tool_response>") and "Error:" in obs and "503" in obs
    assert info["backend_errors"] == 1 and info["search_usage"]["failures"] == 1
    assert "Lighthouse history 1" in obs2 and info2["backend_errors"] == 1, "the provider recovered"
    assert term3 and reward3 == 1.0 and info3["backend_errors"] == 1
    assert len(server.seen("serper")) == 4
    await close_stack(env)


async def test_unreadable_result_page_is_a_page_error(server: PageServer, provider_kwargs, make_env) -> None:
    env = make_env(search="serper", search_kwargs=provider_kwargs("serper"), browse_only_seen_urls=False)
    missing = server.page_url("missing-1")
    ((obs, _, term, _, info),) = await play(
        env, browse_turn(missing, "http://169.254.169.254/latest/meta-data/")
    )
    assert not term and info["pages_read"] == 0
    assert "404" in obs and "169.254.169.254" in obs and obs.count("Error: this page could not be read") == 2
    assert server.page_requests == ["missing-1"], "the metadata address never got a request"
    await close_stack(env)


# ----------------------------------------------------------------------------- budgets


async def test_per_episode_search_budget(server: PageServer, provider_kwargs, make_env) -> None:
    env = make_env(search="serper", search_kwargs=provider_kwargs("serper"), search_budget_per_episode=2)
    steps = await play(env, search_turn("one", "two"), search_turn("three"))
    (_, _, _, _, info1), (obs, _, term, _, info2) = steps
    assert info1["search_usage"]["calls"] == 2 and info1["backend_errors"] == 0
    assert not term and "Error:" in obs and "budget" in obs
    assert info2["search_usage"]["calls"] == 2 and info2["budget_errors"] == 1 and info2["backend_errors"] == 0
    assert len(server.seen("serper")) == 2, "the call over budget never reached the provider"
    # a new episode has a fresh budget
    ((obs, _, _, _, info),) = await play(env, search_turn("four"))
    assert "Lighthouse history 1" in obs and info["search_usage"]["calls"] == 1
    await close_stack(env)


# ----------------------------------------------------------------------------- failover


async def test_failover_chain_serves_from_the_next_provider(
    server: PageServer, provider_kwargs, make_env
) -> None:
    server.fail("serper", *[Fault.status_code(503) for _ in range(3)])
    env = make_env(
        search=["serper", "brave"],
        search_kwargs={"serper": provider_kwargs("serper"), "brave": provider_kwargs("brave")},
    )
    steps = await play(env, search_turn("kellport lighthouse"))
    ((obs, _, _, _, info),) = steps
    assert info["error"] is None and info["backend_errors"] == 0 and "Lighthouse history 1" in obs
    assert len(server.seen("serper")) == 3 and len(server.seen("brave")) == 1
    assert info["search_usage"]["calls"] == 2 and info["search_usage"]["failures"] == 1
    obs, _, _, _, info = await env.unwrapped.astep(browse_turn(result_urls(env)[0]))
    assert info["pages_read"] == 1 and "Marta Quell" in obs
    await close_stack(env)


# ----------------------------------------------------------------------------- record → replay


async def test_record_then_replay_gives_identical_observations(
    server: PageServer, provider_kwargs, make_env, tmp_path: Path
) -> None:
    store = tmp_path / "episode.sqlite"
    recorder = make_env(search="serper", search_kwargs=provider_kwargs("serper"), record_path=str(store))
    await recorder.unwrapped.areset(options={"index": 0})
    first = await recorder.unwrapped.astep(search_turn("kellport lighthouse", "lighthouse keeper"))
    urls = result_urls(recorder)
    actions = [
        search_turn("kellport lighthouse", "lighthouse keeper"),
        browse_turn(urls[0], urls[3]),
        answer_turn(ANSWER),
    ]
    recorded = [first, *[await recorder.unwrapped.astep(a) for a in actions[1:]]]
    await close_stack(recorder)
    await server.__aexit__(None, None, None)  # no server from here on: replay must not need one
    requests_before = len(server.requests)

    replayer = make_env(search="serper", replay_path=str(store))
    replayed = await play(replayer, *actions)
    assert [r[0] for r in replayed] == [r[0] for r in recorded]
    assert [r[1:4] for r in replayed] == [r[1:4] for r in recorded]
    assert replayed[-1][4]["messages"] == recorded[-1][4]["messages"]
    assert "Marta Quell" in replayed[1][0] and replayed[-1][1] == 1.0
    assert len(server.requests) == requests_before

    # A replay miss (never recorded) is an error observation, never an exception.
    base = replayer.unwrapped
    await base.areset(options={"index": 0})
    obs, _, term, _, info = await base.astep(search_turn("something never searched"))
    assert not term and "replay miss" in obs and info["backend_errors"] == 1
    obs, _, _, _, info = await base.astep(search_turn("kellport lighthouse"))
    obs, _, term, _, info = await base.astep(browse_turn(urls[5]))  # a result that was never read
    assert not term and "replay miss" in obs and info["pages_read"] == 0
    await close_stack(replayer)


async def test_miniweb_record_then_replay(monkeypatch: pytest.MonkeyPatch, make_env, tmp_path: Path) -> None:
    monkeypatch.setitem(registry.BACKENDS, "miniweb", "drgym.miniweb.backend:MiniWebBackend")
    store = tmp_path / "miniweb.sqlite"
    options = {"dataset": "demo", "search": "miniweb", "search_kwargs": {"corpus": "demo"}}
    recorder = make_env(**options, record_path=str(store))
    base = recorder.unwrapped
    await base.areset(options={"index": 0})
    first = await base.astep(search_turn("tidal clock inventor"))
    url = next(u for u in result_urls(recorder) if u.endswith(article_path("Tidal clock")))
    actions = [search_turn("tidal clock inventor"), browse_turn(url), answer_turn("Ilse Varrow")]
    recorded = [first, *[await base.astep(a) for a in actions[1:]]]
    assert "1824" in recorded[1][0] and recorded[-1][1] == 1.0
    await close_stack(recorder)  # stops the site: replay runs with no server at all

    replayer = make_env(dataset="demo", search="miniweb", replay_path=str(store))
    replayed = await play(replayer, *actions)
    assert [r[:4] for r in replayed] == [r[:4] for r in recorded]
    await close_stack(replayer)

    # the same replay by backend name, as `--search replay --search-arg path=...` spells it
    by_name = make_env(dataset="demo", search="replay", search_kwargs={"path": str(store)})
    assert [r[:4] for r in await play(by_name, *actions)] == [r[:4] for r in recorded]
    await close_stack(by_name)
