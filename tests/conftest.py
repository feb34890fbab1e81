"""Shared test fixtures: a per-session drgym home, the local data mirror, the tiny model, loopback servers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop with the fix when the environment's drgym install predates this checkout's layout.

    The agents and benchmarks import as ``drgym.agents`` / ``drgym.benchmarks`` and register through entry
    points, both of which come from the install (``pip install -e .``), not from the source tree alone.
    """
    import importlib.util
    from importlib.metadata import entry_points

    if importlib.util.find_spec("drgym.agents") is None or not entry_points(group="drgym.commands"):
        pytest.exit(
            "drgym.agents is not importable or the drgym entry points are missing: the drgym installed in this "
            "environment predates this checkout's layout; reinstall it from here: pip install --no-deps -e .",
            returncode=4,
        )


def _mirror_dir() -> Path | None:
    env = os.environ.get("DRGYM_DATA_MIRROR")
    if env and not env.startswith(("http://", "https://")) and Path(env).is_dir():
        return Path(env)
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def _session_drgym_home(tmp_path_factory: pytest.TempPathFactory):
    """Keep every cache the tests write out of the user's home (indexes are built once per session)."""
    if os.environ.get("DRGYM_HOME"):
        yield Path(os.environ["DRGYM_HOME"])
        return
    home = tmp_path_factory.mktemp("drgym-home")
    os.environ["DRGYM_HOME"] = str(home)
    yield home
    os.environ.pop("DRGYM_HOME", None)


@pytest.fixture
def data_mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the data loader at the local copy of the real data; skip when there is none."""
    mirror = _mirror_dir()
    if mirror is None:
        pytest.skip("no local data mirror (set DRGYM_DATA_MIRROR to a folder with the data files)")
    monkeypatch.setenv("DRGYM_DATA_MIRROR", str(mirror))
    return mirror


@pytest.fixture(scope="session")
def tiny_lm() -> tuple[Any, Any]:
    """The tiny random model and its byte tokenizer, once per session (no test changes its weights)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from drgym.llm.tiny import tiny_causal_lm

    return tiny_causal_lm(seed=0)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    """Start aiohttp apps on loopback; ``await serve(app)`` returns the base URL ending in ``/v1``."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def opener():
    """A live page opener allow-listed to loopback test servers (the only way past the SSRF guard)."""
    from drgym.web import FetchConfig, PageOpener

    page_opener = PageOpener(config=FetchConfig(allow_hosts={"127.0.0.1"}, per_host_rate=None))
    yield page_opener
    await page_opener.aclose()
