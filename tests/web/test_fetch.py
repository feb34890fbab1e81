"""Fetcher tests against real loopback servers: decoding, compression caps, timeouts, redirects, refusals."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from urllib.parse import quote

import pytest

from drgym.errors import BlockedURLError, ConfigError, FetchError, UnsupportedContentError
from drgym.web.fetch import DEFAULT_USER_AGENT, FetchConfig, Fetcher, HTTPStatusError, Page

from .conftest import (
    BOMB_SIZE,
    CYRILLIC_TEXT,
    LATIN_TEXT,
    STREAM_TOTAL,
    UNICODE_TEXT,
    html,
    raw_response,
)


@pytest.fixture
async def fetcher(fetch_config):
    async with Fetcher(fetch_config()) as f:
        yield f


# ----------------------------------------------------------------------------------------------- charsets


@pytest.mark.parametrize(
    ("path", "expected", "charset"),
    [
        ("/html/header-utf8", UNICODE_TEXT, "utf-8"),
        ("/html/header-cp1251", CYRILLIC_TEXT, "cp1251"),
        ("/html/meta-charset", CYRILLIC_TEXT, "koi8-r"),
        ("/html/http-equiv", LATIN_TEXT, "cp1252"),
        ("/html/none-utf8", UNICODE_TEXT, "utf-8"),
        ("/html/none-cp1252", LATIN_TEXT, "cp1252"),
        ("/html/bom-utf16", UNICODE_TEXT, "utf-16-le"),
        ("/html/bogus-charset", UNICODE_TEXT, "utf-8"),
    ],
)
async def test_html_decoded_in_its_charset(web_server, fetcher, path, expected, charset):
    page = await fetcher.fetch(web_server.url(path))
    assert isinstance(page, Page)
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.charset == charset
    assert expected in page.text
    assert "\ufffd" not in page.text
    assert page.url == web_server.url(path)
    assert not page.truncated and page.redirects == []
    assert page.raw_bytes_len > 0 and page.elapsed_s > 0


async def test_undecodable_bytes_are_replaced_not_raised(web_server, fetcher):
    page = await fetcher.fetch(web_server.url("/html/invalid-utf8"))
    assert "good" in page.text and "after" in page.text
    assert "\ufffd" in page.text


async def test_honest_user_agent_and_encodings_sent(web_server, fetcher):
    await fetcher.fetch(web_server.url("/chain/0"))
    assert web_server.log.user_agents == [DEFAULT_USER_AGENT]
    assert web_server.log.accept_encodings == ["gzip, deflate, br"]


async def test_json_is_text(web_server, fetcher):
    page = await fetcher.fetch(web_server.url("/json"))
    assert page.content_type == "application/json"
    assert '"answer": "Paris"' in page.text


async def test_no_content(web_server, fetcher):
    page = await fetcher.fetch(web_server.url("/no-content"))
    assert page.status == 204 and page.text == ""


# -------------------------------------------------------------------------------------------- compression


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw", "br", "identity"])
async def test_compressed_bodies_are_inflated(web_server, fetcher, coding):
    page = await fetcher.fetch(web_server.url(f"/encoded/{coding}"))
    assert UNICODE_TEXT in page.text
    assert page.text.count("lazy dog") == 200
    assert not page.truncated
    if coding != "identity":
        assert page.raw_bytes_len < len(page.text)  # compressed on the wire


async def test_corrupt_gzip_is_a_fetch_error(web_server, fetcher):
    with pytest.raises(FetchError, match="corrupt gzip body"):
        await fetcher.fetch(web_server.url("/encoded/gzip-corrupt"))


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_decompression_bomb_is_capped(web_server, fetch_config, coding):
    cap = 1024 * 1024
    async with Fetcher(fetch_config(max_decompressed_bytes=cap)) as fetcher:
        page = await fetcher.fetch(web_server.url(f"/bomb/{coding}"))
    assert page.truncated and page.truncated_by == "max_decompressed_bytes"
    assert len(page.text) == cap < BOMB_SIZE
    assert set(page.text) == {"A"}
    assert page.raw_bytes_len < 100_000


# ------------------------------------------------------------------------------------------------- limits


async def test_body_larger_than_max_bytes_is_truncated_and_kept(web_server, fetch_config):
    cap = 256 * 1024
    async with Fetcher(fetch_config(max_bytes=cap)) as fetcher:
        started = time.monotonic()
        page = await fetcher.fetch(web_server.url("/huge/text"))
        elapsed = time.monotonic() - started
    assert page.truncated and page.truncated_by == "max_bytes"
    assert page.raw_bytes_len == cap
    assert len(page.text) == cap and page.text.startswith("word word")
    assert elapsed < 3
    await asyncio.wait_for(web_server.log.stream_done["/huge/text"].wait(), 5)
    assert web_server.log.streamed["/huge/text"] < STREAM_TOTAL // 8


async def test_slow_server_hits_read_timeout(web_server, fetch_config):
    async with Fetcher(fetch_config(read_timeout=0.3, total_timeout=5)) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out \\(read timeout\\)"):
            await fetcher.fetch(web_server.url("/slow-headers"))
    assert time.monotonic() - started < 2


async def test_drip_feeding_server_hits_total_timeout(web_server, fetch_config):
    async with Fetcher(fetch_config(read_timeout=0.5, total_timeout=0.6)) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"timed out after 0\.6 s \(total_timeout\)"):
            await fetcher.fetch(web_server.url("/drip"))
    assert time.monotonic() - started < 2


async def test_connection_refused_is_a_fetch_error(fetcher):
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="connection failed"):
        await fetcher.fetch(f"http://127.0.0.1:{port}/")


# ---------------------------------------------------------------------------------------------- redirects


async def test_redirect_chain_is_followed(web_server, fetcher):
    page = await fetcher.fetch(web_server.url("/chain/4"))
    assert page.url == web_server.url("/chain/0")
    assert page.redirects == [web_server.url(f"/chain/{n}") for n in (4, 3, 2, 1)]
    assert "end of chain" in page.text


async def test_too_many_redirects(web_server, fetcher):
    with pytest.raises(FetchError, match=re.escape("too many redirects (more than 5)")):
        await fetcher.fetch(web_server.url("/chain/6"))
    assert web_server.log.hits["/chain/1"] == 1 and "/chain/0" not in web_server.log.hits


async def test_redirect_loop_is_an_error(web_server, fetcher):
    with pytest.raises(FetchError, match="redirect loop: .*/loop/b redirects back to .*/loop/a"):
        await fetcher.fetch(web_server.url("/loop/a"))


async def test_cookie_set_on_redirect_is_carried_within_the_fetch(web_server, fetcher):
    page = await fetcher.fetch(web_server.url("/cookie/start"))
    assert "welcome back" in page.text
    assert page.redirects == [web_server.url("/cookie/start")]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address 169.254.169.254"),
        ("http://10.0.0.1/admin", "a private address 10.0.0.1"),
        ("http://[::ffff:192.168.1.1]/", "a private address 192.168.1.1 embedded in IPv6"),
        ("http://0xa9fea9fe/", "the cloud metadata address 169.254.169.254"),
        ("http://[::1]:9200/", "a loopback address ::1"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme 'gopher' is not allowed"),
    ],
)
async def test_redirect_to_blocked_address_is_refused_at_the_hop(web_server, fetch_config, target, reason):
    async with Fetcher(fetch_config()) as fetcher:
        with pytest.raises(BlockedURLError, match=re.escape(reason)) as info:
            await fetcher.fetch(web_server.url("/redirect?to=" + quote(target, safe="")))
    assert "redirect from" in str(info.value)


async def test_blocked_url_never_connects(web_server):
    async with Fetcher() as fetcher:  # default config: loopback not allow-listed
        with pytest.raises(BlockedURLError, match="host 127.0.0.1 is a loopback address 127.0.0.1"):
            await fetcher.fetch(web_server.url("/chain/0"))
    assert web_server.log.hits == {}


# --------------------------------------------------------------------------------------- content types


@pytest.mark.parametrize("kind", ["image", "octet", "video"])
async def test_binary_refused_from_headers_without_reading_body(web_server, fetch_config, kind):
    max_bytes = 256 * 1024 * 1024  # were the body read, the server would send at least this much
    async with Fetcher(fetch_config(max_bytes=max_bytes)) as fetcher:
        started = time.monotonic()
        with pytest.raises(UnsupportedContentError, match="body not downloaded"):
            await fetcher.fetch(web_server.url(f"/huge/{kind}"))
        assert time.monotonic() - started < 2
    path = f"/huge/{kind}"
    await asyncio.wait_for(web_server.log.stream_done[path].wait(), 5)
    # The server stopped once the socket buffers filled: only what they hold (a few MiB) was ever sent.
    assert web_server.log.streamed[path] < 32 * 1024 * 1024 < max_bytes <= STREAM_TOTAL


async def test_binary_body_behind_text_header_is_refused(web_server, fetcher):
    with pytest.raises(UnsupportedContentError, match="looks like image/png"):
        await fetcher.fetch(web_server.url("/png-as-html"))


async def test_missing_content_type_is_sniffed(raw_server, fetcher):
    raw_server.responses["/page"] = raw_response("200 OK", {}, html(UNICODE_TEXT).encode("utf-8"))
    raw_server.responses["/bin"] = raw_response("200 OK", {}, b"PK\x03\x04" + b"\0" * 2000)
    raw_server.responses["/plain"] = raw_response("200 OK", {}, b"just words")
    page = await fetcher.fetch(raw_server.url("/page"))
    assert page.content_type == "text/html" and UNICODE_TEXT in page.text
    assert (await fetcher.fetch(raw_server.url("/plain"))).content_type == "text/plain"
    with pytest.raises(UnsupportedContentError, match="no content type; the body looks like application/zip"):
        await fetcher.fetch(raw_server.url("/bin"))


async def test_unknown_content_encoding_refused(raw_server, fetcher):
    raw_server.responses["/z"] = raw_response(
        "200 OK", {"Content-Type": "text/html", "Content-Encoding": "zstd"}, b"\x28\xb5\x2f\xfd"
    )
    with pytest.raises(UnsupportedContentError, match="content encoding 'zstd' is not supported"):
        await fetcher.fetch(raw_server.url("/z"))


async def test_body_of_exactly_max_bytes_is_not_truncated(raw_server, fetch_config):
    body = b"x" * 1000
    raw_server.responses["/exact"] = raw_response(
        "200 OK", {"Content-Type": "text/plain", "Content-Length": "1000"}, body
    )
    async with Fetcher(fetch_config(max_bytes=1000)) as fetcher:
        page = await fetcher.fetch(raw_server.url("/exact"))
    assert page.text == "x" * 1000 and not page.truncated and page.truncated_by is None


async def test_stray_nul_in_declared_text_is_still_decoded(raw_server, fetcher):
    raw_server.responses["/nul"] = raw_response(
        "200 OK", {"Content-Type": "text/html; charset=utf-8"}, b"<p>before\x00after</p>"
    )
    page = await fetcher.fetch(raw_server.url("/nul"))
    assert "before\x00after" in page.text


async def test_broken_connection_mid_body_keeps_what_arrived(raw_server, fetcher):
    body = b"<html><body>" + b"partial content " * 100
    raw_server.responses["/cut"] = raw_response(
        "200 OK", {"Content-Type": "text/html; charset=utf-8", "Content-Length": "100000"}, body
    )
    page = await fetcher.fetch(raw_server.url("/cut"))
    assert page.truncated and page.truncated_by == "connection" and page.text.count("partial content") == 100


async def test_pdf_text_extracted_with_page_cap(web_server, fetch_config):
    pytest.importorskip("pypdf")
    async with Fetcher(fetch_config(pdf_max_pages=2)) as fetcher:
        page = await fetcher.fetch(web_server.url("/pdf/3"))
    assert page.content_type == "application/pdf" and page.charset is None
    assert "Hello PDF page 1" in page.text and "Hello PDF page 2" in page.text
    assert "Hello PDF page 3" not in page.text


async def test_broken_pdf_is_unsupported(web_server, fetcher):
    pytest.importorskip("pypdf")
    with pytest.raises(UnsupportedContentError, match="cannot read PDF"):
        await fetcher.fetch(web_server.url("/pdf-broken"))


async def test_pdf_without_pypdf_names_the_extra(web_server, fetcher, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf now raises ImportError
    with pytest.raises(UnsupportedContentError, match=re.escape('pip install "drgym[pdf]"')):
        await fetcher.fetch(web_server.url("/pdf/1"))


# ------------------------------------------------------------------------------------------------- status


@pytest.mark.parametrize("code", [404, 500, 403, 410])
async def test_http_errors_raise_with_status(web_server, fetcher, code):
    with pytest.raises(HTTPStatusError, match=f"HTTP {code} ") as info:
        await fetcher.fetch(web_server.url(f"/status/{code}"))
    assert info.value.status == code
    assert isinstance(info.value, FetchError)


async def test_transient_503_is_retried_once(web_server, fetch_config):
    async with Fetcher(fetch_config(max_retries=1, retry_backoff=0.01)) as fetcher:
        page = await fetcher.fetch(web_server.url("/flaky"))
    assert "recovered" in page.text
    assert web_server.log.hits["/flaky"] == 2


async def test_long_retry_after_fails_fast(web_server, fetch_config):
    async with Fetcher(fetch_config(max_retries=3, max_retry_after=1)) as fetcher:
        started = time.monotonic()
        with pytest.raises(HTTPStatusError, match=re.escape("HTTP 429 Too Many Requests")) as info:
            await fetcher.fetch(web_server.url("/status/429?retry_after=3600"))
    assert info.value.retry_after == 3600
    assert time.monotonic() - started < 1


# ----------------------------------------------------------------------------------- robots, rate, session


async def test_robots_disallow_honoured_when_on(web_server, fetch_config):
    async with Fetcher(fetch_config(respect_robots=True)) as fetcher:
        with pytest.raises(BlockedURLError, match="robots.txt of 127.0.0.1 disallows"):
            await fetcher.fetch(web_server.url("/private/page"))
        page = await fetcher.fetch(web_server.url("/public/page"))
        assert "public" in page.text
    assert "/private/page" not in web_server.log.hits
    assert web_server.log.hits["/robots.txt"] == 1  # cached per host


async def test_robots_ignored_by_default(web_server, fetcher):
    page = await fetcher.fetch(web_server.url("/private/page"))
    assert "secret" in page.text
    assert "/robots.txt" not in web_server.log.hits


async def test_missing_robots_allows(raw_server, fetch_config):
    raw_server.responses["/page"] = raw_response("200 OK", {"Content-Type": "text/plain"}, b"hello")
    async with Fetcher(fetch_config(respect_robots=True)) as fetcher:
        assert (await fetcher.fetch(raw_server.url("/page"))).text == "hello"


async def test_per_host_rate_limit_spaces_requests(web_server, fetch_config):
    async with Fetcher(fetch_config(per_host_rate=20.0, per_host_burst=1.0)) as fetcher:
        started = time.monotonic()
        await asyncio.gather(*(fetcher.fetch(web_server.url("/public/page")) for _ in range(5)))
        elapsed = time.monotonic() - started
    assert elapsed >= 4 / 20 * 0.9  # 1 at once, then 4 more at 20/s


async def test_rate_limit_wait_beyond_total_timeout_fails_fast(web_server, fetch_config):
    async with Fetcher(fetch_config(per_host_rate=0.1, per_host_burst=1.0, total_timeout=1.0)) as fetcher:
        await fetcher.fetch(web_server.url("/public/page"))
        with pytest.raises(FetchError, match="per-host rate limit for 127.0.0.1"):
            await fetcher.fetch(web_server.url("/public/page"))


async def test_one_session_shared_by_concurrent_fetches(web_server, fetcher):
    pages = await asyncio.gather(*(fetcher.fetch(web_server.url("/encoded/gzip")) for _ in range(20)))
    assert all(UNICODE_TEXT in p.text for p in pages)
    (state,) = fetcher._states.values()
    await fetcher.fetch(web_server.url("/chain/0"))
    assert list(fetcher._states.values()) == [state]
    await fetcher.aclose()
    assert state.session.closed and not fetcher._states
    assert "end of chain" in (await fetcher.fetch(web_server.url("/chain/0"))).text  # usable after aclose


def test_each_live_loop_gets_its_own_session(fetch_config):
    """The env's sync API runs on a private loop and async users on theirs: one fetcher serves both."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def handler(request):
        return web.Response(text="hi", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", handler)
    background = asyncio.new_event_loop()
    thread = threading.Thread(target=background.run_forever, daemon=True)
    thread.start()
    server = TestServer(app, host="127.0.0.1")
    asyncio.run_coroutine_threadsafe(server.start_server(), background).result(5)
    fetcher = Fetcher(fetch_config())
    url = str(server.make_url("/"))
    try:
        first = asyncio.run_coroutine_threadsafe(fetcher.fetch(url), background).result(5)

        async def on_main_loop():
            second = await fetcher.fetch(url)
            sessions = [s.session for s in fetcher._states.values()]
            await fetcher.aclose()  # closes both: its own directly, the background one on that loop
            return second, sessions

        second, sessions = asyncio.run(on_main_loop())
        assert first.text == second.text == "hi"
        assert len(sessions) == 2 and sessions[0] is not sessions[1]
        assert all(s.closed for s in sessions)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), background).result(5)
        background.call_soon_threadsafe(background.stop)
        thread.join(5)
        background.close()


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_bytes": 0}, "FetchConfig.max_bytes must be a positive number"),
        ({"total_timeout": -1}, "FetchConfig.total_timeout must be a positive number"),
        ({"read_timeout": float("inf")}, "FetchConfig.read_timeout must be a positive number"),
        ({"max_redirects": -1}, "FetchConfig.max_redirects must be >= 0"),
        ({"allow_hosts": "127.0.0.1"}, "allow_hosts must be a collection of strings"),
        ({"user_agent": ""}, "FetchConfig.user_agent must be a printable"),
    ],
)
def test_bad_config_is_rejected(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FetchConfig(**options)


def test_config_defaults_are_sane():
    cfg = FetchConfig()
    assert cfg.user_agent.startswith("drgym/") and "+https://" in cfg.user_agent
    assert cfg.max_bytes == 4 * 1024 * 1024 and cfg.max_redirects == 5
    assert not cfg.respect_robots and not cfg.allow_private and cfg.allow_hosts == frozenset()
    assert "image/png" not in cfg.allowed_content_types and "text/html" in cfg.allowed_content_types
    assert isinstance(FetchConfig(allow_hosts=["LocalHost"]).allow_hosts, frozenset)


@pytest.mark.parametrize(("reply", "detail"), [
    (b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nhi", "Bad status line: Invalid status code: b'HTTP/1.1 abc OK'"),
    (b"hello there\r\n\r\n", "Bad status line: Expected HTTP/, RTSP/ or ICE/: b'hello there'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
     "Invalid character in Content-Length: b'Content-Length: abc'"),
])
async def test_malformed_response_is_named_so_without_a_status_nobody_sent(raw_server, fetcher, reply, detail):
    raw_server.responses["/malformed"] = reply
    url = raw_server.url("/malformed")
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(url)
    assert str(caught.value) == f"malformed HTTP response from {url}: {detail}"
