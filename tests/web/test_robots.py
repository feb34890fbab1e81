"""robots.txt: offline parsing, per-origin caching with TTL, shared in-flight fetches, failures allow."""

from __future__ import annotations

import asyncio

import pytest
from yarl import URL

from drgym.errors import BlockedURLError, FetchError
from drgym.web.fetch import DEFAULT_USER_AGENT, Fetcher
from drgym.web.robots import RobotsCache, parse_robots, robots_url

from .conftest import raw_response

ROBOTS = """
User-agent: *
Disallow: /private/
Allow: /private/open

User-agent: drgym
Disallow: /no-drgym/
"""


class _Source:
    """Serves robots.txt bodies per origin and counts fetches (a real coroutine, like the fetcher's)."""

    def __init__(
        self, bodies: dict[str, str | None], delay: float = 0.0, error: Exception | None = None
    ) -> None:
        self.bodies = bodies
        self.delay = delay
        self.error = error
        self.requests: list[str] = []

    async def __call__(self, url: URL) -> str | None:
        self.requests.append(str(url))
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.bodies.get(str(url))


def test_robots_url_is_the_origin_root():
    assert str(robots_url(URL("https://example.com:8443/a/b?c=1#d"))) == "https://example.com:8443/robots.txt"


def test_parse_robots_offline():
    rules = parse_robots(ROBOTS)
    assert not rules.can_fetch("somebot/1.0", "http://x.test/private/page")
    assert rules.can_fetch("somebot/1.0", "http://x.test/public")
    assert not rules.can_fetch(DEFAULT_USER_AGENT, "http://x.test/no-drgym/page")


async def test_rules_applied_and_cached_per_origin():
    source = _Source(
        {"http://x.test/robots.txt": ROBOTS, "http://y.test/robots.txt": "User-agent: *\nDisallow: /\n"}
    )
    cache = RobotsCache(source, DEFAULT_USER_AGENT)
    assert not await cache.allowed(URL("http://x.test/no-drgym/a"))
    assert await cache.allowed(URL("http://x.test/private/page"))  # drgym's own group replaces the * group
    assert await cache.allowed(URL("http://x.test/other"))
    assert not await cache.allowed(URL("http://y.test/anything"))
    assert source.requests == ["http://x.test/robots.txt", "http://y.test/robots.txt"]


async def test_ttl_expiry_refetches():
    source = _Source({"http://x.test/robots.txt": ROBOTS})
    cache = RobotsCache(source, "otherbot", ttl_s=0.05)
    assert not await cache.allowed(URL("http://x.test/private/a"))
    await asyncio.sleep(0.08)
    source.bodies["http://x.test/robots.txt"] = "User-agent: *\nAllow: /\n"
    assert await cache.allowed(URL("http://x.test/private/a"))
    assert len(source.requests) == 2


async def test_concurrent_checks_share_one_fetch():
    source = _Source({"http://x.test/robots.txt": ROBOTS}, delay=0.05)
    cache = RobotsCache(source, "otherbot")
    results = await asyncio.gather(*(cache.allowed(URL(f"http://x.test/private/{i}")) for i in range(20)))
    assert results == [False] * 20
    assert source.requests == ["http://x.test/robots.txt"]


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch():
    source = _Source({"http://x.test/robots.txt": ROBOTS}, delay=0.05)
    cache = RobotsCache(source, "otherbot")
    first = asyncio.ensure_future(cache.allowed(URL("http://x.test/private/1")))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(cache.allowed(URL("http://x.test/private/2")))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second is False
    assert source.requests == ["http://x.test/robots.txt"]


@pytest.mark.parametrize("error", [FetchError("HTTP 503"), BlockedURLError("blocked"), OSError("reset")])
async def test_failure_to_fetch_robots_allows(error):
    cache = RobotsCache(_Source({}, error=error), "otherbot")
    assert await cache.allowed(URL("http://x.test/private/a"))


async def test_missing_robots_allows():
    cache = RobotsCache(_Source({}), "otherbot")
    assert await cache.allowed(URL("http://x.test/private/a"))


async def test_origins_kept_are_bounded():
    source = _Source({})
    cache = RobotsCache(source, "otherbot", max_origins=3)
    for i in range(10):
        await cache.allowed(URL(f"http://h{i}.test/"))
    assert len(cache._rules) == 3
    await cache.allowed(URL("http://h0.test/"))  # forgotten, so fetched again
    assert source.requests.count("http://h0.test/robots.txt") == 2


async def test_robots_through_the_fetcher_404_and_5xx_allow(raw_server, fetch_config):
    raw_server.responses["/robots.txt"] = raw_response("500 Server Error", {"Content-Length": "0"}, b"")
    raw_server.responses["/private/x"] = raw_response("200 OK", {"Content-Type": "text/plain"}, b"ok")
    async with Fetcher(fetch_config(respect_robots=True)) as fetcher:
        assert (await fetcher.fetch(raw_server.url("/private/x"))).text == "ok"


async def test_robots_group_for_our_user_agent(raw_server, fetch_config):
    raw_server.responses["/robots.txt"] = raw_response(
        "200 OK",
        {"Content-Type": "text/plain"},
        b"User-agent: drgym\nDisallow: /\n\nUser-agent: *\nAllow: /\n",
    )
    raw_server.responses["/page"] = raw_response("200 OK", {"Content-Type": "text/plain"}, b"ok")
    async with Fetcher(fetch_config(respect_robots=True)) as fetcher:
        with pytest.raises(BlockedURLError, match="robots.txt of 127.0.0.1 disallows"):
            await fetcher.fetch(raw_server.url("/page"))
    async with Fetcher(fetch_config(respect_robots=True, user_agent="otherbot/2.0")) as fetcher:
        assert (await fetcher.fetch(raw_server.url("/page"))).text == "ok"
