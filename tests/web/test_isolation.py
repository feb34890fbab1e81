"""``IsolatedPool``: page work in child processes that are killed and replaced when their time is up.

Slow inputs are genuinely slow, not patched: an element with 20,000 attributes (libxml2's attribute handling is
superlinear: about 3 s here) and a regular expression that backtracks catastrophically in C code.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drgym.errors import ConfigError, FetchError, UnsupportedContentError
from drgym.web.extract import extract
from drgym.web.fetch import Fetcher
from drgym.web.isolation import IsolatedPool, WorkerCrashedError, WorkTimeoutError
from drgym.web.opener import PageOpener
from tests.slow_pages import slow_to_parse

from .conftest import UNICODE_TEXT

ROOT = Path(__file__).resolve().parents[2]
PAGE = "<html><head><title>T</title></head><body><h1>Title</h1><p>Alpha, beta and gamma, all here.</p></body></html>"


def backtrack(n: int) -> bool:
    """Exponential in ``n`` inside the regex engine (C code that holds the GIL the whole time)."""
    return re.match(r"(a+)+$", "a" * n + "b") is not None


def die(code: int) -> None:
    os._exit(code)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child not yet reaped is a zombie: count it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


async def wait_gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def wait_replaced(pool: IsolatedPool, count: int, within_s: float = 10.0) -> int:
    """``pool.replaced`` once it reaches ``count`` (the pool's thread counts a killed worker after it exits)."""
    deadline = time.monotonic() + within_s
    while pool.replaced < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return pool.replaced


async def wait_pids(pool: IsolatedPool, count: int, within_s: float = 120.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if len(pool.pids) >= count:
            return pool.pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"the pool has {len(pool.pids)} workers, expected {count}")


@pytest.fixture
async def pool() -> AsyncIterator[IsolatedPool]:
    p = IsolatedPool(workers=1, time_limit_s=60)
    try:
        yield p
    finally:
        p.close()


async def test_extracts_as_inline_does(pool):
    assert await pool.run(extract, PAGE, "http://example.org/") == extract(PAGE, "http://example.org/")
    assert await pool.run(extract, PAGE.encode(), None, links=True) == extract(PAGE.encode(), None, links=True)


async def test_the_callers_exception_comes_back_unchanged(pool):
    with pytest.raises(ValueError, match="invalid literal for int"):
        await pool.run(int, "not a number")
    assert await pool.run(int, "12") == 12  # the worker survived it
    assert pool.replaced == 0


async def test_a_call_past_its_limit_is_stopped_and_the_worker_replaced(pool):
    await pool.run(extract, PAGE)
    [first] = pool.pids
    started = time.monotonic()
    with pytest.raises(WorkTimeoutError, match=r"extract passed its time limit of 0\.5 s; its worker process was "
                                               r"stopped"):
        await pool.run(extract, slow_to_parse(), time_limit_s=0.5)
    assert time.monotonic() - started < 5
    assert await wait_gone(first)
    assert pool.replaced == 1
    assert await pool.run(extract, PAGE) == extract(PAGE)
    assert pool.pids and pool.pids[0] != first


async def test_a_cancelled_call_kills_its_worker_at_once(pool):
    await pool.run(extract, PAGE)
    [first] = pool.pids
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pool.run(backtrack, 40), 0.5)
    assert await wait_gone(first, within_s=2.0)
    assert time.monotonic() - started < 3
    assert await wait_replaced(pool, 1) == 1
    assert await pool.run(backtrack, 5) is False


async def test_a_queued_call_whose_caller_gave_up_never_runs(pool):
    await pool.run(extract, PAGE)
    busy = asyncio.ensure_future(pool.run(backtrack, 40, time_limit_s=1.0))
    await asyncio.sleep(0.1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pool.run(die, 3), 0.2)  # queued behind the busy call, then dropped
    with pytest.raises(WorkTimeoutError):
        await busy
    assert await pool.run(int, "7") == 7
    assert pool.replaced == 1  # only the timed-out call's worker: the dropped call never crashed one


async def test_a_crash_is_reported_and_the_worker_replaced(pool):
    with pytest.raises(WorkerCrashedError, match=r"die crashed its worker process \(exit status 7\)"):
        await pool.run(die, 7)
    assert pool.replaced == 1
    assert await pool.run(int, "5") == 5


async def test_the_memory_limit_bounds_a_worker():
    pool = IsolatedPool(workers=1, max_memory_bytes=512 * 1024**2, preload=())
    try:
        with pytest.raises(MemoryError):
            await pool.run(bytearray, 2 * 1024**3)
        assert await pool.run(len, b"abc") == 3
    finally:
        pool.close()


async def test_two_workers_serve_calls_side_by_side():
    pool = IsolatedPool(workers=2, preload=())
    try:
        await asyncio.gather(pool.run(int, "1"), pool.run(int, "2"))
        await wait_pids(pool, 2)
        started = time.monotonic()
        slow = asyncio.ensure_future(pool.run(backtrack, 40, time_limit_s=1.5))
        await asyncio.sleep(0.2)
        assert await pool.run(int, "3") == 3  # the other worker answers while one is stuck
        assert time.monotonic() - started < 1.4
        with pytest.raises(WorkTimeoutError):
            await slow
    finally:
        pool.close()


async def test_close_kills_workers_fails_queued_calls_and_the_pool_restarts():
    pool = IsolatedPool(workers=1, preload=())
    await pool.run(int, "1")
    [pid] = pool.pids
    busy = asyncio.ensure_future(pool.run(backtrack, 40))
    queued = asyncio.ensure_future(pool.run(int, "2"))
    await asyncio.sleep(0.2)
    pool.close()
    with pytest.raises(FetchError):
        await queued
    with pytest.raises(FetchError):
        await busy
    assert await wait_gone(pid, within_s=2.0)
    assert pool.pids == []
    assert await pool.run(int, "3") == 3  # usable again
    pool.close()
    pool.close()  # twice is fine


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="IsolatedPool workers must be a positive integer, got 0"):
        IsolatedPool(workers=0)
    with pytest.raises(ConfigError, match="IsolatedPool time_limit_s must be a positive number, got -1"):
        IsolatedPool(time_limit_s=-1)


def test_exit_does_not_wait_for_abandoned_work_and_leaves_no_worker(tmp_path):
    """A program that exits while a worker is stuck in a 10-minute parse ends at once, and so does the worker."""
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent("""
        import asyncio
        from tests.web.test_isolation import backtrack
        from drgym.web.isolation import IsolatedPool

        async def main():
            pool = IsolatedPool(workers=1, time_limit_s=600, preload=())
            await pool.run(int, "1")
            print(pool.pids[0], flush=True)
            try:
                await asyncio.wait_for(pool.run(backtrack, 60), 0.3)
            except asyncio.TimeoutError:
                pass
            asyncio.ensure_future(pool.run(backtrack, 60))  # left running on purpose
            await asyncio.sleep(0.3)
            print(pool.pids[0] if pool.pids else 0, flush=True)

        asyncio.run(main())
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    pids = [int(line) for line in done.stdout.split()]
    assert took < 60  # the worker start dominates; a wait for the parse would take ten minutes
    for pid in pids:
        if pid:
            assert asyncio.run(wait_gone(pid, within_s=5.0)), f"worker {pid} outlived its program"


async def test_pdf_text_and_errors_come_through_the_pool(web_server, fetch_config, pool):
    pytest.importorskip("pypdf")
    async with Fetcher(fetch_config(pdf_max_pages=2), pool=pool) as fetcher:
        page = await fetcher.fetch(web_server.url("/pdf/3"))
        assert "Hello PDF page 2" in page.text and "Hello PDF page 3" not in page.text
        with pytest.raises(UnsupportedContentError, match="cannot read PDF"):  # raised in the worker
            await fetcher.fetch(web_server.url("/pdf-broken"))
    assert pool.pids and pool.replaced == 0


async def test_opener_extracts_in_the_pool_it_was_given(web_server, fetch_config, pool):
    opener = PageOpener(config=fetch_config(), pool=pool)
    doc = await opener(web_server.url("/html/header-utf8"))
    await opener.aclose()
    assert UNICODE_TEXT in doc.content
    assert pool.pids, "a pool passed in stays open: it belongs to the caller"
    own = PageOpener(config=fetch_config())
    assert UNICODE_TEXT in (await own(web_server.url("/html/header-utf8"))).content
    [pid] = own.pool.pids[:1]
    await own.aclose()
    assert await wait_gone(pid), "an opener closes the pool it made"
