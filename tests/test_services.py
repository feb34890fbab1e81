"""``ToolServices``: envs share a rate limit, a budget, a cache and sessions exactly when given one object.

Every figure is taken at a loopback SearxNG-schema upstream on its own thread (tests/gateway/upstream.py), so
the sync API can be used as a training script would: what reaches the upstream is what the envs shared.
"""

from __future__ import annotations

import ast
import gc
import itertools
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import drgym
from drgym.errors import ConfigError
from drgym.search.episode import SearchLayer
from drgym.services import ToolServices
from tests.gateway.upstream import Upstream

RPS = 10.0  # one token per 100 ms, burst 1


def search_turn(*queries: str) -> str:
    call = {"name": "web_search", "arguments": {"query": list(queries)}}
    return f"<think>search</think><tool_call>{json.dumps(call)}</tool_call>"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def make(upstream: Upstream, services: ToolServices | None = None, rps: float = RPS, **options: Any) -> gym.Env:
    kwargs = {"base_url": upstream.url, "rps": rps, "burst": 1, "language": None}
    return gym.make(
        "drgym/WebResearch-v0", dataset="demo", search="searxng", search_kwargs=kwargs, services=services, **options
    )


def search(env: gym.Env, *queries: str) -> dict[str, Any]:
    """The info of one search turn, with the observation under ``"observation"``."""
    env.reset(options={"index": 0})
    observation, *_, info = env.step(search_turn(*queries))
    return {**info, "observation": observation}


def sessions_of(env: gym.Env) -> list[Any]:
    """The aiohttp sessions the env's SearxNG provider holds, one per event loop it was used on."""
    layer = env.unwrapped.backend
    while isinstance(layer, SearchLayer):  # down the stack's layers to the provider
        layer = layer.below()[0]
    return list(layer._sessions._sessions.values())


def gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]


def paced(times: list[float], rps: float = RPS) -> bool:
    """Whether ``times`` (arrivals at the upstream) took at least 3/4 of what one bucket allows: one token at a
    time at ``rps`` (the quarter is slack for a loaded machine; two buckets would let them in at once)."""
    return max(times) - min(times) >= 0.75 * (len(times) - 1) / rps


@pytest.fixture
def unclosed(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Messages of every "Unclosed ..." warning or loop error raised while the test ran (collected at the end)."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        caplog.set_level(logging.ERROR, logger="asyncio")
        yield found
        gc.collect()
    found += [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    found += [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]


# ----------------------------------------------------------------------------- shared or not


def test_envs_given_one_services_share_one_limit_budget_and_cache(upstream: Upstream, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache.sqlite")
    with ToolServices() as shared:
        a, b = (make(upstream, shared, search_budget_global=4, cache_path=cache) for _ in range(2))
        assert a.unwrapped.backend is b.unwrapped.backend
        assert search(a, "alpha one", "alpha two")["error"] is None
        info = search(b, "alpha one", "beta one")  # one from the shared cache, one live
        assert info["error"] is None and info["search_usage"]["cache_hits"] == 1
        assert sorted(upstream.queries()) == ["alpha one", "alpha two", "beta one"], "a cached query asked once"
        assert paced(upstream.times()), "one bucket paces both envs"
        search(a, "alpha three")  # the fourth live call: the budget is spent now, for both envs
        info = search(b, "beta two")
        assert info["budget_errors"] == 1 and "global search budget spent: 4 of 4" in info["observation"]
        assert len(upstream.queries()) == 4
        a.close()
        b.close()
        assert not shared.closed
        assert shared.usage_summary()["providers"]["searxng"]["calls"] == 4


def test_envs_without_services_share_nothing(upstream: Upstream) -> None:
    a, b = (make(upstream, search_budget_global=1, rps=2.0) for _ in range(2))  # a token per 500 ms
    try:
        assert a.unwrapped.services is not b.unwrapped.services
        assert a.unwrapped.backend is not b.unwrapped.backend
        assert search(a, "same query")["error"] is None
        assert search(b, "same query")["error"] is None, "each env has a budget of its own"
        assert upstream.queries() == ["same query", "same query"]
        assert min(gaps(upstream.times())) < 0.25, "each env has a bucket of its own"
    finally:
        a.close()
        b.close()


# ----------------------------------------------------------------------------- who closes what


def test_an_env_closes_the_services_it_made(upstream: Upstream, unclosed: list[str]) -> None:
    env = make(upstream)
    search(env, "owned")
    services, sessions = env.unwrapped.services, sessions_of(env)
    assert len(sessions) == 1 and not sessions[0].closed
    env.close()
    assert services.closed and sessions[0].closed
    env.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        services.run(_noop())
    assert unclosed == [] or pytest.fail(f"unclosed resources: {unclosed}")


async def _noop() -> None:
    return None


def test_an_env_leaves_given_services_open_and_their_owner_closes_them(
    upstream: Upstream, unclosed: list[str]
) -> None:
    shared = ToolServices()
    first = make(upstream, shared)
    search(first, "first")
    sessions = sessions_of(first)
    first.close()
    assert not shared.closed and not sessions[0].closed, "a given object is never closed by the env"
    second = make(upstream, shared)  # still usable by the next env
    assert search(second, "second")["error"] is None and sessions_of(second) == sessions
    second.close()
    shared.close()
    assert shared.closed and all(s.closed for s in sessions)
    assert unclosed == [] or pytest.fail(f"unclosed resources: {unclosed}")


async def test_async_envs_close_through_aclose_on_their_loop(upstream: Upstream, unclosed: list[str]) -> None:
    async with ToolServices() as shared:
        envs = [make(upstream, shared) for _ in range(3)]
        first = envs[0]
        trajectories = await drgym.arun_episodes(envs.pop, _SearchOnce, episodes=3, concurrency=3)
        assert all(t.error is None and t.search_calls == 1 for t in trajectories)
        sessions = sessions_of(first)
        assert len(sessions) == 1 and not sessions[0].closed, "one session on this loop for every env"
    assert shared.closed and all(s.closed for s in sessions)
    assert len(upstream.queries()) == 3
    assert unclosed == [] or pytest.fail(f"unclosed resources: {unclosed}")


class _SearchOnce(drgym.BaseAgent):
    name = "search-once"

    def reset(self, question: str, info: dict[str, Any]) -> None:
        self.turn = 0

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        self.turn += 1
        if self.turn == 1:
            return search_turn(f"async {id(self)}")
        return "<think>done</think><answer>unknown</answer>"


# ----------------------------------------------------------------------------- threads and loops


def test_one_services_serves_envs_on_several_threads(upstream: Upstream, unclosed: list[str]) -> None:
    """Works across threads: each thread's sync API runs on a loop of its own, the limits are one."""
    shared = ToolServices()
    envs = [make(upstream, shared, search_budget_global=6) for _ in range(3)]
    infos: list[dict[str, Any]] = []
    lock = threading.Lock()

    def play(env: gym.Env, tag: int) -> None:
        for i in range(3):
            info = search(env, f"thread {tag} query {i}")
            with lock:
                infos.append(info)

    threads = [threading.Thread(target=play, args=(env, n)) for n, env in enumerate(envs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(infos) == 9
    assert len(upstream.queries()) == 6, "one global budget across the threads"
    assert sum(i["budget_errors"] for i in infos) == 3
    assert paced(upstream.times()), "one bucket across the threads"
    sessions = sessions_of(envs[0])
    assert len(sessions) == 3, "one session per thread's loop"
    for env in envs:
        env.close()
    shared.close()  # from the main thread: the sessions of the three idle loops are closed too
    assert all(s.closed for s in sessions)
    assert unclosed == [] or pytest.fail(f"unclosed resources: {unclosed}")


def test_services_are_checked_and_cannot_be_pickled(upstream: Upstream) -> None:
    with pytest.raises(ConfigError, match="`services` must be a drgym.ToolServices or None, got dict"):
        make(upstream, {})  # type: ignore[arg-type]
    import pickle

    with ToolServices() as shared, pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(shared)
    with pytest.raises(RuntimeError, match="closed"):
        make(upstream, shared)


# ----------------------------------------------------------------------------- no module state


ROOT = Path(__file__).resolve().parents[1]
_MUTABLE_CALLS = {"dict", "list", "set", "OrderedDict", "defaultdict", "WeakValueDictionary", "WeakKeyDictionary",
                  "WeakSet", "local", "ContextVar", "deque", "Counter"}
_ALLOWED = {
    ("drgym/web/extract.py", "_local"): "one lxml parser per thread: a cache of a stateless tool, no shared state",
    ("drgym/data/fetcher.py", "_verified"): "files whose checksum was checked (path, size, mtime): skips re-hashing",
}


def _module_state(path: Path, label: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        mutable = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)) or (
            isinstance(value, ast.Call)
            and (getattr(value.func, "id", None) or getattr(value.func, "attr", None)) in _MUTABLE_CALLS
        )
        for target in targets:
            name = getattr(target, "id", "")
            constant = name.isupper() or name.lstrip("_").isupper() or (name.startswith("__") and name.endswith("__"))
            if mutable and name and not constant and (label, name) not in _ALLOWED:
                found.append(f"{label}: {name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{label}: global {', '.join(node.names)}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if "atexit" in names:
                found.append(f"{label}: imports atexit")
    return found


def test_no_module_level_mutable_state_in_the_package() -> None:
    files = [p for folder in ("drgym", "agents") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50
    found = [entry for path in files for entry in _module_state(path, str(path.relative_to(ROOT)))]
    assert found == [], "module-level registries / process state (pass the owning object instead):\n" + "\n".join(
        found
    )


def test_the_state_check_finds_a_registry(tmp_path: Path) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import atexit\n_cache: dict[str, int] = {}\n_seen = set()\nLIMITS = {}\n"
        "def f():\n    global _seen\n"
    )
    assert _module_state(fake, "fake.py") == [
        "fake.py: _cache", "fake.py: _seen", "fake.py: imports atexit", "fake.py: global _seen"
    ]
