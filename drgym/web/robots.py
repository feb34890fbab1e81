"""robots.txt support: fetch once per origin, cache with a TTL, answer ``allowed(url)``.

Off by default (``FetchConfig.respect_robots``): a research agent reads single pages a person could open,
but a deployment that fetches at crawl scale should honour site owners' wishes. The file is fetched through
the same fetcher (same SSRF guard, limits and user agent), parsed offline with :mod:`urllib.robotparser`, and
any failure to get it (network error, 4xx, 5xx, not text) means "no restrictions": a robots.txt that cannot be
read must not block research. Concurrent requests for one origin share a single fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from urllib.robotparser import RobotFileParser

import aiohttp
from yarl import URL

from drgym.errors import DrgymError

__all__ = ["RobotsCache", "parse_robots", "robots_url"]

logger = logging.getLogger(__name__)


def robots_url(url: URL) -> URL:
    """The robots.txt URL of ``url``'s origin (scheme, host and port)."""
    return url.with_path("/robots.txt").with_query(None).with_fragment(None)


def parse_robots(text: str) -> RobotFileParser:
    """Parse robots.txt text without any network access."""
    parser = RobotFileParser()
    parser.parse(text.splitlines())
    return parser


def _origin(url: URL) -> str:
    return f"{url.scheme}://{(url.raw_host or '').lower()}:{url.port}"


class RobotsCache:
    """Per-origin robots.txt rules with a TTL and a bounded number of origins.

    Args:
        fetch_text: Coroutine returning the robots.txt body for a URL, or None when there is none; a
            ``DrgymError``, ``aiohttp.ClientError``, ``OSError`` or ``ValueError`` also counts as none.
        user_agent: The user agent string matched against ``User-agent`` lines.
        ttl_s: How long rules are reused before the file is fetched again.
        max_origins: Most origins kept; the least recently used are forgotten beyond that.
    """

    def __init__(
        self,
        fetch_text: Callable[[URL], Awaitable[str | None]],
        user_agent: str,
        *,
        ttl_s: float = 3600.0,
        max_origins: int = 10_000,
    ) -> None:
        self._fetch_text = fetch_text
        self._user_agent = user_agent
        self._ttl = ttl_s
        self._max = max_origins
        self._rules: OrderedDict[str, tuple[float, RobotFileParser | None]] = OrderedDict()
        self._inflight: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[RobotFileParser | None]]] = {}

    async def allowed(self, url: URL) -> bool:
        """Whether robots.txt lets this user agent fetch ``url`` (True when there are no usable rules)."""
        rules = await self._rules_for(url)
        if rules is None:
            return True
        return rules.can_fetch(self._user_agent, str(url))

    async def _rules_for(self, url: URL) -> RobotFileParser | None:
        key = _origin(url)
        cached = self._rules.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._rules.move_to_end(key)
            return cached[1]
        # One shared task per origin: callers await it shielded, so a cancelled caller never cancels the
        # fetch the others wait for.
        loop = asyncio.get_running_loop()
        inflight = self._inflight.get(key)
        if inflight is None or inflight[0] is not loop:
            task = loop.create_task(self._load_and_store(key, url))
            inflight = self._inflight[key] = (loop, task)
        return await asyncio.shield(inflight[1])

    async def _load_and_store(self, key: str, url: URL) -> RobotFileParser | None:
        try:
            rules = await self._load(url)
            self._store(key, rules)
            return rules
        finally:
            current = self._inflight.get(key)
            if current is not None and current[1] is asyncio.current_task():
                del self._inflight[key]

    async def _load(self, url: URL) -> RobotFileParser | None:
        target = robots_url(url)
        try:
            text = await self._fetch_text(target)
        except (DrgymError, aiohttp.ClientError, OSError, ValueError) as exc:
            # Any failure to read robots.txt means no restrictions.
            logger.debug("robots.txt unavailable at %s: %s", target, exc)
            return None
        if text is None:
            return None
        return parse_robots(text)

    def _store(self, key: str, rules: RobotFileParser | None) -> None:
        self._rules[key] = (time.monotonic() + self._ttl, rules)
        self._rules.move_to_end(key)
        while len(self._rules) > self._max:
            self._rules.popitem(last=False)

    def clear(self) -> None:
        """Forget every cached robots.txt."""
        self._rules.clear()
