"""The web subcommands of `drgym`: fetch, extract, read, search --backend miniweb, and `miniweb serve`.

`drgym miniweb serve` runs as a user would run it (a subprocess on loopback); the other commands run
in-process through ``drgym.cli.main`` against it, or against a small hostile server in a thread.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from drgym.cli import main
from drgym.data import load_corpus
from drgym.miniweb import article_path
from drgym.search.searxng import SearxngBackend
from drgym.search.serper import SerperBackend
from tests.slow_pages import slow_to_parse

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
BOMB = gzip.compress(b"word " * (4 * 1024 * 1024), compresslevel=9)  # 20 MiB of text in about 20 kB
# Seconds of extraction even within the extractor's input bounds (see tests/slow_pages.py).
SLOW_TO_PARSE = slow_to_parse()
RAW_REPLIES = {
    "/bad-status": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nhi",
    "/bad-header": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nBad Header\x01: x\r\nContent-Length: 2\r\n\r\nhi",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n",
    "/dropped": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n" + b"word " * 1000,
}
TIDAL = next(p.text for p in load_corpus("demo") if p.title == "Tidal clock")


def serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `drgym miniweb serve --port 0 ARGS`; return the process and the base URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "drgym.cli", "miniweb", "serve", "--corpus", "demo", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=60):
            proc.kill()
            pytest.fail("drgym miniweb serve printed nothing within 60 s")
    first = proc.stdout.readline()
    if not first.startswith("miniweb: serving"):
        proc.kill()
        pytest.fail(f"unexpected first line {first!r}; stderr: {proc.stderr.read() if proc.stderr else ''}")
    return proc, first.split()[-1]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    proc, base = serve()
    yield base
    stop(proc)


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    """A loopback server in a thread (the CLI runs its own event loop in the test's thread)."""

    async def binary(_: web.Request) -> web.Response:
        return web.Response(body=PNG, headers={"Content-Type": "text/html; charset=utf-8"})

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def empty(_: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="text/html")

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<html><body><p>" + b"word " * 1000 + b"</p>")
        for _ in range(4000):  # 40 MB if anyone read it all
            await resp.write(b"<p>" + b"filler " * 1430 + b"</p>")
        return resp

    async def bomb(_: web.Request) -> web.Response:
        return web.Response(body=BOMB, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})

    async def slow_to_parse(_: web.Request) -> web.Response:
        return web.Response(text=SLOW_TO_PARSE, content_type="text/html")

    app = web.Application()
    for path, handler in (("/binary", binary), ("/image", image), ("/empty", empty), ("/big", big),
                          ("/bomb", bomb), ("/slow-to-parse", slow_to_parse)):
        app.router.add_get(path, handler)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture(scope="module")
def raw() -> Iterator[str]:
    """A bare TCP server in a thread that answers each path with exact bytes (malformed HTTP), then hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            writer.write(RAW_REPLIES[request.split(b" ", 2)[1].decode("latin-1")])
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, KeyError):
            pass
        finally:
            writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- miniweb serve


def test_serve_prints_its_endpoints_and_serves_pages_and_both_search_apis(site: str) -> None:
    assert site.startswith("http://127.0.0.1:")

    async def go() -> tuple[list, list]:
        serper = SerperBackend(base_url=site + "/serper", api_key="any key is accepted")
        searx = SearxngBackend(base_url=site, language=None)
        try:
            return await serper.search("Who invented the tidal clock?", 3), await searx.search("tidal clock", 3)
        finally:
            await serper.aclose()
            await searx.aclose()

    by_serper, by_searxng = asyncio.run(go())
    assert [r.extras["position"] for r in by_serper] == [1, 2, 3]
    assert site + article_path("Tidal clock") in {r.url for r in by_serper}
    assert by_searxng[0].url == site + article_path("Tidal clock")


def test_serve_with_injected_faults_and_latency(capsys: pytest.CaptureFixture[str]) -> None:
    proc, base = serve("--latency-ms", "300", "--fault-rate", "1", "--faults", "503", "--seed", "3")
    try:
        started = time.perf_counter()
        code, out, err = run(capsys, "fetch", base + article_path("Tidal clock"), "--allow-host", "127.0.0.1")
        elapsed = time.perf_counter() - started
    finally:
        stop(proc)
    assert code == 1 and out == ""
    assert "failed" in err and "503" in err
    assert elapsed >= 0.3, "every answer waits the injected latency"


def test_serve_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "miniweb", "serve", "--host", "10.0.0.1", "--port", "0")
    assert code == 2 and "loopback" in err
    code, _, err = run(capsys, "miniweb", "serve", "--fault-rate", "1.5")
    assert code == 2 and "fault_rate" in err
    code, _, err = run(capsys, "miniweb", "serve", "--faults", "429,teapot")
    assert code == 2 and "kinds" in err


# ----------------------------------------------------------------------------- search


def test_search_backend_miniweb(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "search", "tidal clock inventor", "--backend", "miniweb", "--corpus", "demo", "-k", "3")
    results = json.loads(out)
    assert code == 0 and 1 <= len(results) <= 3
    assert all(r["url"].startswith("http://127.0.0.1:") and r["provider"] == "miniweb" for r in results)
    assert "Tidal clock" in [r["title"] for r in results]


# ----------------------------------------------------------------------------- fetch


def test_fetch_prints_clean_markdown(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fetch", site + article_path("Tidal clock"), "--allow-host", "127.0.0.1")
    assert code == 0 and err == ""
    assert out.startswith("# Tidal clock") and " ".join(TIDAL.split()[:15]) in " ".join(out.split())
    for junk in ("cookies", "Privacy policy", "Related articles", "Search MiniWeb"):
        assert junk not in out


def test_fetch_json_and_raw(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = site + article_path("Tidal clock")
    code, out, _ = run(capsys, "fetch", url, "--allow-host", "127.0.0.1", "--json")
    record = json.loads(out)
    assert code == 0 and record["url"] == url and record["status"] == 200
    assert record["content_type"] == "text/html" and record["charset"] == "utf-8"
    assert record["truncated"] is False and record["redirects"] == [] and "1824" in record["text"]
    code, out, _ = run(capsys, "fetch", url, "--allow-host", "127.0.0.1", "--raw")
    assert code == 0 and out.startswith("<!DOCTYPE html>") and 'id="cookie-banner"' in out


def test_fetch_refusals_exit_3(site: str, hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    for url, reason in (
        (site + article_path("Tidal clock"), "loopback"),  # not allow-listed: the SSRF guard holds
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("file:///etc/passwd", "scheme"),
    ):
        code, out, err = run(capsys, "fetch", url)
        assert (code, out) == (3, ""), url
        assert err.startswith("drgym fetch: refused:") and reason in err, err
    for path, reason in (("/binary", "looks like image/png"), ("/image", "image/png")):
        code, out, err = run(capsys, "fetch", hostile + path, "--allow-host", "127.0.0.1")
        assert (code, out) == (3, "") and reason in err, err


def test_fetch_failures_exit_1(site: str, hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fetch", site + article_path("No such article"), "--allow-host", "127.0.0.1")
    assert (code, out) == (1, "") and "404" in err
    code, out, err = run(capsys, "fetch", hostile + "/empty", "--allow-host", "127.0.0.1")
    assert (code, out) == (1, "") and "no readable text" in err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    code, out, err = run(capsys, "fetch", f"http://127.0.0.1:{closed}/", "--allow-host", "127.0.0.1")
    assert (code, out) == (1, "") and "connection failed" in err


def test_fetch_stops_reading_at_the_cap(hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    code, out, err = run(capsys, "fetch", hostile + "/big", "--allow-host", "127.0.0.1", "--max-bytes", "200000")
    assert code == 0 and "word word" in out
    assert "cut at the size cap (--max-bytes 200000 bytes read from the wire)" in err
    assert time.perf_counter() - started < 10


def test_fetch_names_the_decompression_cap_and_a_dropped_connection(hostile: str, raw: str, capsys) -> None:
    code, out, err = run(capsys, "fetch", hostile + "/bomb", "--allow-host", "127.0.0.1", "--json")
    assert code == 0 and json.loads(out)["truncated_by"] == "max_decompressed_bytes"
    assert f"cut at the decompression cap (10485760 bytes once inflated; {len(BOMB)} compressed" in err
    assert "size cap" not in err
    code, out, err = run(capsys, "fetch", raw + "/dropped", "--allow-host", "127.0.0.1")
    assert code == 0 and out.startswith("word word")
    assert "the connection dropped before the whole body arrived; what came (5000 bytes) is shown" in err
    assert "size cap" not in err


@pytest.mark.parametrize(("path", "detail"), [
    ("/bad-status", "Bad status line: Invalid status code: b'HTTP/1.1 abc OK'"),
    ("/bad-header", "Invalid header token: b'Bad Header\\x01: x'"),
    ("/bad-chunk", "Invalid character in chunk size: b'zz'"),
])
def test_fetch_reports_malformed_http_without_a_made_up_400(raw: str, path: str, detail: str, capsys) -> None:
    code, out, err = run(capsys, "fetch", raw + path, "--allow-host", "127.0.0.1")
    assert (code, out) == (1, "")
    assert err == f"drgym fetch: failed: malformed HTTP response from {raw}{path}: {detail}\n"


def test_fetch_timeout_bounds_a_slow_to_parse_page(hostile: str, capsys) -> None:
    """--timeout covers extraction too: the parse is stopped, and the command does not wait for it to end."""
    started = time.perf_counter()
    code, out, err = run(capsys, "fetch", hostile + "/slow-to-parse", "--allow-host", "127.0.0.1", "--timeout", "2")
    elapsed = time.perf_counter() - started
    assert (code, out) == (1, "")
    assert "took longer than the rest of --timeout 2 s and was stopped" in err
    assert elapsed < 3.5, f"drgym fetch --timeout 2 took {elapsed:.1f} s"


# ----------------------------------------------------------------------------- extract


def test_extract_file_and_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    page = (
        "<html><head><meta charset='windows-1252'><title>x</title></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About us</a></nav>"
        "<article><h1>Caf\xe9 history</h1><p>The caf\xe9 opened in 1890 and served <a href='/c'>coffee</a> "
        "to sailors for a century.</p></article><footer>All rights reserved.</footer></body></html>"
    ).encode("cp1252")
    path = tmp_path / "page.html"
    path.write_bytes(page)
    code, out, _ = run(capsys, "extract", str(path))
    assert code == 0 and out.startswith("# Café history") and "opened in 1890" in out
    assert "About us" not in out and "All rights reserved" not in out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(page)))
    code, out2, _ = run(capsys, "extract", "-", "--links", "--url", "https://example.org/a/")
    assert code == 0 and "[coffee](https://example.org/c)" in out2


def test_extract_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "extract", str(tmp_path / "missing.html"))
    assert code == 2 and "no such file" in err
    for name, data in (("empty.html", b""), ("image.html", PNG), ("blank.html", b"<html><body> </body></html>")):
        (tmp_path / name).write_bytes(data)
        code, out, err = run(capsys, "extract", str(tmp_path / name))
        assert (code, out) == (1, "") and "no readable text" in err, name
    (tmp_path / "big.html").write_bytes(b"<p>x</p>" * 200)
    code, _, err = run(capsys, "extract", str(tmp_path / "big.html"), "--max-bytes", "100")
    assert code == 2 and "--max-bytes=100" in err


# ----------------------------------------------------------------------------- read


def test_read_prints_what_the_reader_keeps(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = site + article_path("Tidal clock")
    code, out, err = run(capsys, "read", url, "--allow-host", "127.0.0.1", "--question", "Who invented the tidal clock?")
    assert code == 0 and err == "" and "Ilse Varrow" in out and "cookies" not in out
    code, out, _ = run(capsys, "read", url, "--allow-host", "127.0.0.1", "--question", "tidal clock", "--json")
    notes = json.loads(out)
    assert code == 0 and notes["url"] == url and notes["title"] == "Tidal clock" and notes["error"] is None
    assert notes["segments_read"] == notes["segments_total"] == 1 and "1824" in notes["notes"]


def test_read_refused_and_failed(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "read", site + article_path("Tidal clock"), "--question", "q")
    assert (code, out) == (3, "") and "refused" in err
    code, out, err = run(capsys, "read", site + "/wiki/Nope", "--allow-host", "127.0.0.1", "--question", "q")
    assert (code, out) == (1, "") and "404" in err
    code, _, err = run(capsys, "read", site + "/wiki/Nope", "--question", "q", "--reader", "openai")
    assert code == 2 and "unknown LLM spec" in err


def test_read_with_the_llm_browsing_agent(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    url = site + article_path("Tidal clock")
    code, out, err = run(
        capsys, "read", url, "--allow-host", "127.0.0.1", "--question", "Who invented the tidal clock?",
        "--reader", "tiny", "--segment-chars", "100", "--max-segments", "2", "--max-tokens", "8", "--json",
    )
    notes = json.loads(out)
    assert code == 0, err
    # The tiny model has random weights: the mechanics are checked, not what it says.
    assert notes["title"] == "Tidal clock" and notes["segments_total"] > 2 and 1 <= notes["segments_read"] <= 2
    assert notes["error"] is None and len(notes["notes"]) <= 2 * 2000


def test_env_runs_the_live_serper_path_against_the_served_miniweb(site: str) -> None:
    import gymnasium as gym

    import drgym  # noqa: F401  (registers the env ids)
    from drgym.agents.scripted import ScriptedAgent
    from drgym.ratelimit import TokenBucket
    from drgym.runner import run_episode
    from drgym.web.fetch import FetchConfig
    from drgym.web.opener import PageOpener

    opener = PageOpener(config=FetchConfig(allow_hosts=frozenset({"127.0.0.1"}), per_host_rate=None))
    env = gym.make(
        "drgym/WebResearch-v0",
        dataset="demo",
        search="serper",
        search_kwargs={"base_url": site + "/serper", "api_key": "any", "page_opener": opener,
                       "limiter": TokenBucket(1000.0, burst=100)},
    )
    try:
        trajs = [run_episode(env, ScriptedAgent(), options={"index": i}) for i in range(6)]
    finally:
        env.unwrapped.services.run(env.unwrapped.backend.aclose())
        env.unwrapped.services.run(opener.aclose())
        env.close()
    assert all(t.error is None and t.terminated and t.pages_read >= 1 for t in trajs)
    assert all(site in t.turns[1].observation for t in trajs), "pages were read from the served site"
    assert sum(t.f1 for t in trajs) > 0
