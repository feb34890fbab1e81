"""The gateway on loopback: same episodes as in-process, token, SSRF guard, size limits, secrets, budgets."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import gymnasium as gym
import pytest

import drgym
from drgym.agents.scripted import ScriptedAgent
from drgym.errors import BackendError, BlockedURLError, BudgetExceededError, ConfigError
from drgym.gateway.client import GatewayBackend
from drgym.gateway.server import check_bind
from drgym.gateway.services import GatewayConfig, GatewayServices
from drgym.retry import RetryPolicy
from tests.gateway.conftest import searxng
from tests.gateway.upstream import stored


def _comparable(trajectories):
    return [
        (t.record_id, t.reward, t.f1, t.answer, t.search_calls, t.pages_read, [x.observation for x in t.turns])
        for t in trajectories
    ]


async def test_episodes_through_the_gateway_match_in_process_ones(run_gateway) -> None:
    url = await run_gateway(GatewayConfig(search="local", corpus="demo"))

    def through(search: str):
        return drgym.arun_episodes(
            lambda: gym.make("drgym/WebResearch-v0", dataset="demo", search=search), ScriptedAgent,
            episodes=6, seed=3, concurrency=3,
        )

    remote = await through("gateway:" + url)
    local = await through("local")
    assert all(t.error is None for t in remote)
    assert sum(t.pages_read for t in remote) > 0  # pages were opened and read on the gateway
    assert _comparable(remote) == _comparable(local)


async def test_token_is_checked_and_a_refused_request_does_nothing(run_gateway, upstream) -> None:
    url = await run_gateway(searxng(upstream), token="s3cret-token")
    for token in (None, "wrong-token"):
        client = GatewayBackend(url, token=token)
        try:
            with pytest.raises(BackendError, match="HTTP 401: gateway token (missing|wrong)"):
                await client.search("anything at all")
        finally:
            await client.aclose()
    assert upstream.queries() == []
    client = GatewayBackend(url, token="s3cret-token")
    try:
        assert len(await client.search("anything at all")) == 3
        assert (await client.health())["status"] == "ok"
    finally:
        await client.aclose()
    assert upstream.queries() == ["anything at all"]


async def test_token_from_the_environment(run_gateway, upstream, monkeypatch) -> None:
    url = await run_gateway(searxng(upstream), token="from-env-token")
    monkeypatch.setenv("DRGYM_GATEWAY_TOKEN", "from-env-token")
    client = GatewayBackend(url)
    try:
        assert len(await client.search("q")) == 3
    finally:
        await client.aclose()


def test_a_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="binding '0.0.0.0' \\(not loopback\\) needs a shared token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "t")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)


async def test_the_ssrf_guard_stays_on_the_gateway(run_gateway, upstream) -> None:
    url = await run_gateway(searxng(upstream))
    client = GatewayBackend(url)
    try:
        for target in (upstream.url + "/secret", "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"):
            with pytest.raises(BlockedURLError):
                await client.open(target)
        view = client.episode_view()
        from drgym.browse.memory import EpisodeMemory

        pages = await client.browser(view, max_pages_per_call=5, time_budget_s=10).browse(
            [upstream.url + "/secret"], question="q", subquestions={}, memory=EpisodeMemory()
        )
        assert pages[0].error is not None and "secret" not in pages[0].notes
    finally:
        await client.aclose()
    assert upstream.paths == []  # the internal page was never fetched


async def test_request_size_limits(run_gateway, upstream) -> None:
    url = await run_gateway(searxng(upstream))
    async with aiohttp.ClientSession() as session:
        big = {"query": "x" * (2 << 20), "episode": "e"}
        async with session.post(url + "/v1/search", data=json.dumps(big)) as resp:
            assert resp.status == 413
            assert "exceeds 1048576" in (await resp.json())["error"]["message"]
        long = {"query": "x" * 5000, "episode": "e"}
        async with session.post(url + "/v1/search", json=long) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["message"] == "search: `query` is 5000 characters, more than 2048"
        async with session.post(url + "/v1/browse", json={"urls": ["u"] * 40, "question": "q", "episode": "e"}) as r:
            assert r.status == 400 and "more than 32" in (await r.json())["error"]["message"]
        async with session.post(url + "/v1/search", data=b"not json") as resp:
            assert resp.status == 400
    assert upstream.queries() == []


async def test_api_keys_never_leave_the_gateway(run_gateway, upstream, caplog) -> None:
    key = "sk-live-DO-NOT-LEAK-4242"
    config = GatewayConfig(search="serper", search_kwargs={"api_key": key, "base_url": upstream.url + "/serper"})
    url = await run_gateway(config)
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/search", json={"query": "q", "episode": "e"}) as resp:
            body = await resp.text()
        async with session.get(url + "/metrics") as resp:
            metrics = await resp.text()
        async with session.get(url + "/health") as resp:
            health = await resp.text()
    assert "HTTP 403" in body and "BackendError" in body
    for text in (body, metrics, health, caplog.text):
        assert key not in text


async def test_budgets_travel_with_the_episode(run_gateway, upstream) -> None:
    url = await run_gateway(searxng(upstream, budget_global=3))
    client = GatewayBackend(url, budget_per_episode=1)
    try:
        first, second = client.episode_view(), client.episode_view()
        await first.search("one")
        with pytest.raises(BudgetExceededError, match="1 of 1 provider calls used in this episode"):
            await first.search("two")
        await second.search("three")
        assert (first.usage.calls, second.usage.calls) == (1, 1)
        await client.episode_view().search("four")
        with pytest.raises(BudgetExceededError, match="global search budget spent: 3 of 3"):
            await client.episode_view().search("five")
    finally:
        await client.aclose()
    assert upstream.queries() == ["one", "three", "four"]


async def test_record_mode_keys_entries_to_the_episode_sent(run_gateway, upstream, tmp_path) -> None:
    from drgym.search.cache import SearchStore

    path = str(tmp_path / "rec.sqlite")
    url = await run_gateway(searxng(upstream, cache_path=path, cache_mode="record"))
    client = GatewayBackend(url)
    try:
        await client.episode_view("record-7").search("recorded query")
    finally:
        await client.aclose()
    store = SearchStore(path, create=False)
    try:
        assert store.episodes_sync() == ["record-7"]
    finally:
        store.close()


async def test_a_gateway_that_stays_down_is_an_error_observation() -> None:
    client = GatewayBackend(
        "http://127.0.0.1:9", retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, max_total_s=2)
    )
    env = gym.make("drgym/WebResearch-v0", dataset="demo", search=client).unwrapped
    try:
        env.reset(seed=0)
        call = '<think>t</think><tool_call>{"name": "web_search", "arguments": {"query": ["x"]}}</tool_call>'
        observation, _, terminated, _, info = await env.astep(call)
        assert not terminated and info["backend_errors"] == 1
        assert "gateway search at http://127.0.0.1:9 failed: connection failed" in observation
        assert "3 attempts" in observation
    finally:
        env.close()
        await client.aclose()


async def test_shutdown_finishes_requests_in_flight(upstream, tmp_path) -> None:
    from drgym.gateway.server import serve

    upstream.delay_s = 0.5
    path = str(tmp_path / "cache.sqlite")
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(searxng(upstream, cache_path=path), port=0, stop=stop, on_ready=ready.set_result)
    )
    client = GatewayBackend(await ready, retry=RetryPolicy.never())
    try:
        search = asyncio.create_task(client.search("slow question"))
        while not upstream.queries():
            await asyncio.sleep(0.01)
        stop.set()  # SIGTERM does this
        results = await search
        await asyncio.wait_for(server, 10)
    finally:
        await client.aclose()
    assert len(results) == 3
    assert stored(path, ["slow question"]) == ["slow question"]


def test_env_options_that_belong_to_the_gateway_are_refused() -> None:
    with pytest.raises(ConfigError, match="cache_path cannot be set on an env behind a gateway"):
        gym.make("drgym/WebResearch-v0", search="gateway:http://127.0.0.1:1", cache_path="x.sqlite")
    with pytest.raises(ConfigError, match=r"search_kwargs \['corpus'\] are not gateway client options"):
        gym.make("drgym/WebResearch-v0", search="gateway:http://127.0.0.1:1", search_kwargs={"corpus": "demo"})
    with pytest.raises(ConfigError, match='gateway URL must look like "http://HOST:PORT"'):
        gym.make("drgym/WebResearch-v0", search="gateway:127.0.0.1:1")


async def test_metrics_in_prometheus_text_format(run_gateway, upstream, tmp_path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    config = searxng(upstream, cache_path=str(tmp_path / "c.sqlite"), rps=50.0, burst=1.0, budget_global=100)
    url = await run_gateway(config, token="tok-metrics")
    client = GatewayBackend(url, token="tok-metrics")
    try:
        await asyncio.gather(*(client.search(f"q{i}") for i in range(4)))
        await client.search("q0")  # from the store
        with pytest.raises(BlockedURLError):
            await client.open("http://10.0.0.1/")
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/metrics") as resp:
                assert resp.status == 401  # /metrics needs the token too
            headers = {"Authorization": "Bearer tok-metrics"}
            async with session.get(url + "/metrics", headers=headers) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await resp.text()
    finally:
        await client.aclose()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("drgym_gateway_requests_total", (("endpoint", "search"), ("outcome", "ok")))] == 5
    assert samples[("drgym_gateway_requests_total", (("endpoint", "open"), ("outcome", "tool_error")))] == 1
    assert samples[("drgym_gateway_errors_total", (("kind", "BlockedURLError"),))] == 1
    assert samples[("drgym_gateway_errors_total", (("kind", "unauthorized"),))] == 1
    assert samples[("drgym_gateway_upstream_calls_total", (("provider", "searxng"),))] == 4
    assert samples[("drgym_gateway_cache_hits_total", (("provider", "searxng"),))] == 1
    assert samples[("drgym_gateway_spend_usd_total", (("provider", "searxng"),))] == 0.0
    assert samples[("drgym_gateway_budget_used", ())] == 4
    assert samples[("drgym_gateway_budget_limit", ())] == 100
    assert samples[("drgym_gateway_rate_limit_waits_total", ())] == 3  # 4 at once, burst 1: three waited
    assert samples[("drgym_gateway_rate_limit_wait_seconds_total", ())] > 0
    assert samples[("drgym_gateway_request_seconds_count", (("endpoint", "search"),))] == 5


async def test_record_through_one_gateway_replay_through_another(run_gateway, upstream, tmp_path) -> None:
    from drgym.errors import ReplayMissError

    path = str(tmp_path / "run.sqlite")
    recorder = GatewayBackend(await run_gateway(searxng(upstream, cache_path=path, cache_mode="record")))
    try:
        recorded = await recorder.episode_view("ep-1").search("kept for replay")
    finally:
        await recorder.aclose()
    replayer = GatewayBackend(await run_gateway(GatewayConfig(search="searxng", cache_path=path, cache_mode="replay")))
    try:
        assert await replayer.episode_view().search("kept for replay") == recorded
        with pytest.raises(ReplayMissError, match="replay miss: no recorded search for 'never asked'"):
            await replayer.episode_view().search("never asked")
    finally:
        await replayer.aclose()
    assert upstream.queries() == ["kept for replay"]


def test_a_gateway_instance_takes_its_own_options() -> None:
    client = GatewayBackend("http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="give its options .* to GatewayBackend"):
        gym.make("drgym/WebResearch-v0", search=client, search_budget_per_episode=3)


@pytest.mark.slow
async def test_the_gateway_reads_pages_with_an_llm_reader(run_gateway) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from drgym.browse import BrowsingAgent

    services = GatewayServices(GatewayConfig(search="local", corpus="demo", reader="tiny"))  # --reader tiny
    assert isinstance(services.reader, BrowsingAgent)
    services.reader.max_tokens = 8  # a random model: keep its answers short
    url = await run_gateway(services)
    trajectories = await drgym.arun_episodes(
        lambda: gym.make("drgym/WebResearch-v0", dataset="demo", search="gateway:" + url), ScriptedAgent,
        episodes=2, seed=0, concurrency=2,
    )
    assert all(t.error is None and (t.terminated or t.truncated) for t in trajectories)
    browses = [turn for t in trajectories for turn in t.turns if turn.tool == "browse_webpage"]
    assert browses and all("<tool_response>" in turn.observation for turn in browses)


async def test_metric_labels_do_not_grow_with_what_clients_send(run_gateway, upstream) -> None:
    url = await run_gateway(searxng(upstream), token="t0ken")
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            async with session.get(f"{url}/made-up-{i}") as resp:
                assert resp.status == 401
        async with session.get(url + "/metrics", headers={"Authorization": "Bearer t0ken"}) as resp:
            text = await resp.text()
    assert 'endpoint="other",outcome="unauthorized"} 5.0' in text
    assert "made-up" not in text
