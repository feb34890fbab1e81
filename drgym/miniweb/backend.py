"""``MiniWebBackend``: the whole live search-and-read path, offline, against the mini-web site on loopback.

A search goes through a real provider client (HTTP, JSON schema, retries): by default
:class:`~drgym.search.searxng.SearxngBackend` against the site's SearxNG-compatible API, or with
``search_api="serper"`` :class:`~drgym.search.serper.SerperBackend` against its Serper-compatible one. A page
read goes through a real :class:`~drgym.web.opener.PageOpener`:
the SSRF-guarded :class:`~drgym.web.fetch.Fetcher`, then HTML extraction. Nothing is faked, so an env on
``search="miniweb"`` exercises what a live provider does, with no internet and deterministic content. With
``faults=FaultConfig(...)`` the site also adds latency and fails some requests (429, 503, resets, slow
drip), as the live web does.

Event loops: the site runs on **its own thread and event loop**, started lazily at first use (or by
``await start()``), and every event loop that uses the backend gets its own clients (search client, page
opener: aiohttp sessions belong to the loop that made them) talking to it. The site must not share the
episodes' loop: with two thousand episodes in flight on one loop, each request the site had to answer waited
behind every episode's callbacks, and half the searches ran out of time (see ``benchmarks/perf/load.py``); on
its own loop the site gets its share of the interpreter whatever the episodes queue. So the env's synchronous
API (a private background loop) and async callers (their own loops) share one backend and one site; a URL
from a site this backend ran before (after :meth:`aclose`) is moved to the current one. Call :meth:`aclose`
before a loop ends to close its clients cleanly.

Only the site's own pages can be read: the fetcher allow-lists only the site's loopback address (everything
else, other loopback and private addresses included, stays behind the SSRF guard), and :meth:`open` refuses
any URL not on the site's origin (another port on the same address included) with
:class:`~drgym.errors.BlockedURLError` before a connection is made.

Example::

    env = gym.make("drgym/WebResearch-v0", dataset="demo", search="miniweb", search_kwargs={"corpus": "demo"})
    env = gym.make("drgym/WebResearch-v0", dataset="demo", search=MiniWebBackend(corpus="demo"))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from drgym.data.records import Passage
from drgym.document import Document
from drgym.errors import BackendError, BlockedURLError, ConfigError
from drgym.miniweb.faults import FaultConfig
from drgym.miniweb.render import article_path
from drgym.miniweb.site import MiniWiki, build_app, load_wiki
from drgym.ratelimit import TokenBucket
from drgym.retry import RetryPolicy
from drgym.search._http import HttpSearchBackend
from drgym.search.base import Result
from drgym.search.searxng import SearxngBackend
from drgym.search.serper import SerperBackend
from drgym.web.fetch import FetchConfig
from drgym.web.isolation import IsolatedPool
from drgym.web.opener import PageOpener

__all__ = ["MiniWebBackend"]

logger = logging.getLogger(__name__)

_CROSS_LOOP_CLOSE_S = 5.0
SEARCH_APIS = ("searxng", "serper")
_SERPER_KEY = "miniweb"  # the site accepts any key; the client insists on having one


_START_TIMEOUT_S = 600.0  # loading and indexing a large corpus takes a while on a loaded machine


@dataclass
class _Server:
    """The running site: its own event loop in a daemon thread."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    runner: web.AppRunner
    sock: socket.socket
    base_url: str
    port: int


@dataclass
class _Site:
    """The site as one client event loop sees it: its address, and that loop's clients."""

    loop: asyncio.AbstractEventLoop
    base_url: str
    port: int
    search: HttpSearchBackend
    opener: PageOpener


class MiniWebBackend:
    """A :class:`~drgym.search.base.SearchBackend` over a corpus served as a local website.

    Args:
        corpus: A corpus name (``drgym.data.list_corpora()``: ``wiki-local``, ``demo``); ignored when
            ``passages`` is given, except as the name shown on pages.
        passages: Serve these passages instead of a named corpus.
        host: The loopback address to listen on (the only address the fetcher may reach).
        port: The port; 0 (default) picks a free one. A fixed port gives stable URLs across runs (useful with
            ``cache_path``).
        results_per_page: Results per search (SearxNG pages hold about 10; the env asks for 10).
        search_api: Which API of the site searches go through: ``"searxng"`` (default) or ``"serper"``.
        faults: Latency and faults the site injects (none by default); see
            :class:`~drgym.miniweb.faults.FaultConfig`.
        fetch_config: Limits of the page fetcher; its ``allow_hosts`` is replaced by ``{host}``. By default no
            per-host rate limit and up to 256 connections to the site (it stands for the whole web, not one
            host), and no redirects (the site never redirects).
        search_timeout_s: Limit for one search request.
        search_rps: Searches per second (a private bucket, not the shared provider quota).
        search_retry: Retry policy of the search client (its default: a few attempts within 30 s).

    Raises:
        ConfigError: ``host`` is not a loopback address, or another bad option.
    """

    name = "miniweb"

    def __init__(
        self,
        corpus: str = "wiki-local",
        *,
        passages: Sequence[Passage] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        results_per_page: int = 10,
        search_api: str = "searxng",
        faults: FaultConfig | None = None,
        fetch_config: FetchConfig | None = None,
        search_timeout_s: float = 20.0,
        search_rps: float = 1000.0,
        search_retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(corpus, str) or not corpus.strip():
            raise ConfigError(f"miniweb: corpus must be a corpus name, got {corpus!r}")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                f"miniweb: host must be a loopback IP address like 127.0.0.1, got {host!r}"
            ) from None
        if not address.is_loopback:
            raise ConfigError(f"miniweb: host must be a loopback address (the site is local), got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"miniweb: port must be an integer from 0 to 65535, got {port!r}")
        if (
            isinstance(results_per_page, bool)
            or not isinstance(results_per_page, int)
            or results_per_page < 1
        ):
            raise ConfigError(
                f"miniweb: results_per_page must be a positive integer, got {results_per_page!r}"
            )
        if search_api not in SEARCH_APIS:
            raise ConfigError(f"miniweb: search_api must be one of {', '.join(SEARCH_APIS)}, got {search_api!r}")
        if faults is not None and not isinstance(faults, FaultConfig):
            raise ConfigError(f"miniweb: faults must be a FaultConfig, got {type(faults).__name__}")
        self.corpus = corpus
        self.search_api = search_api
        self.faults = faults
        self.search_retry = search_retry
        self.host = str(address)
        self.port = port
        self.results_per_page = results_per_page
        if not (isinstance(search_timeout_s, (int, float)) and search_timeout_s > 0):
            raise ConfigError(
                f"miniweb: search_timeout_s must be a positive number, got {search_timeout_s!r}"
            )
        TokenBucket(search_rps)  # checks the rate now rather than at the first search
        self.search_timeout_s = float(search_timeout_s)
        self.search_rps = search_rps
        config = fetch_config or FetchConfig(
            per_host_rate=None, max_redirects=0, max_connections=256, max_connections_per_host=256
        )
        self.fetch_config = dataclasses.replace(config, allow_hosts=frozenset({self.host}))
        self._passages = tuple(passages) if passages is not None else None
        self._wiki: MiniWiki | None = None
        self._wiki_lock = threading.Lock()
        self._lock = threading.Lock()
        self._sites: dict[asyncio.AbstractEventLoop, _Site] = {}
        self._starting: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._ports: set[int] = set()  # every port a site of this backend has listened on
        self._server: _Server | None = None
        self._server_lock = threading.Lock()
        self._pool = IsolatedPool()  # page extraction for every site's opener (its workers start at first use)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Start the running loop's site if needed; return its base URL (``http://127.0.0.1:PORT``)."""
        return (await self._site()).base_url

    @property
    def wiki(self) -> MiniWiki | None:
        """The content the sites serve (articles and search index), once the first site has started."""
        return self._wiki

    async def url_for(self, title: str) -> str:
        """The URL of the article ``title`` on the running loop's site."""
        return (await self._site()).base_url + article_path(title)

    async def aclose(self) -> None:
        """Close every loop's clients (each on its own loop) and stop the site; safe to call twice.

        The backend stays usable: the next call starts a new site.
        """
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        with self._lock:
            sites, self._sites = self._sites, {}
            self._starting.clear()
        for loop, site in sites.items():
            if loop is current:
                await _stop(site)
            elif loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(_stop(site), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), _CROSS_LOOP_CLOSE_S)
                except (asyncio.TimeoutError, OSError) as exc:
                    logger.warning("miniweb: the site on another event loop did not stop cleanly: %r", exc)
        with self._server_lock:
            server, self._server = self._server, None
        if server is not None:
            try:
                await asyncio.to_thread(_stop_server, server)
            except RuntimeError:  # no new threads at interpreter exit: stop it from this one
                _stop_server(server)
        self._pool.close()

    def __repr__(self) -> str:
        ports = sorted(s.port for s in self._sites.values())
        return f"MiniWebBackend(corpus={self.corpus!r}, host={self.host!r}, ports={ports})"

    # ------------------------------------------------------------------ SearchBackend

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Up to ``k`` (at most ``results_per_page``) articles for ``query``, through the site's SearxNG API.

        Raises:
            ToolError: empty query. ConfigError: ``k`` < 1. BackendError: the site failed to answer.
        """
        site = await self._site()
        results = await site.search.search(query, k)
        return [Result(r.title, r.url, r.snippet, {**r.extras, "provider": self.name}) for r in results]

    async def open(self, url: str) -> Document:
        """Fetch and extract a page of the site.

        Raises:
            BlockedURLError: ``url`` is not on the site (another host, address or port).
            FetchError: the page does not exist (HTTP 404) or could not be read.
        """
        site = await self._site()
        return await site.opener(self._on_site(url, site))

    # ------------------------------------------------------------------ internals

    def _on_site(self, url: str, site: _Site) -> str:
        """``url`` moved to ``site`` when it belongs to any site of this backend; refused otherwise."""
        shown = url[:200] if isinstance(url, str) else repr(type(url))
        if not isinstance(url, str):
            raise BlockedURLError(f"miniweb: a URL must be a string, got {shown}")
        try:
            parsed = URL(url.strip())
            host, port, scheme = parsed.host, parsed.port, parsed.scheme
        except (ValueError, TypeError):
            raise BlockedURLError(f"miniweb: malformed URL {shown!r}") from None
        with self._lock:
            known = port in self._ports
        if scheme != "http" or host is None or host.strip("[]") != self.host or not known:
            raise BlockedURLError(
                f"miniweb reads only pages of its own site ({site.base_url}/...); {shown!r} is not on it"
            )
        if port == site.port:
            return str(parsed)
        return str(parsed.with_port(site.port))  # a URL from this backend's site on another loop

    def _load_wiki(self) -> MiniWiki:
        """Build the content once (in a worker thread: loading and indexing a corpus takes seconds)."""
        with self._wiki_lock:
            if self._wiki is None:
                if self._passages is not None:
                    self._wiki = MiniWiki(self._passages, corpus=self.corpus)
                else:
                    self._wiki = load_wiki(self.corpus)
            return self._wiki

    async def _site(self) -> _Site:
        loop = asyncio.get_running_loop()
        with self._lock:
            site = self._sites.get(loop)
            if site is not None:
                return site
            starting = self._starting.setdefault(loop, asyncio.Lock())
        async with starting:
            with self._lock:
                site = self._sites.get(loop)
            if site is None:
                site = await self._start_site(loop)
                with self._lock:
                    self._sites[loop] = site
                    self._ports.add(site.port)
                    for lp in [lp for lp in self._sites if lp.is_closed()]:
                        self._sites.pop(lp)  # its sessions went with their loop
                        self._starting.pop(lp, None)
        return site

    async def _start_site(self, loop: asyncio.AbstractEventLoop) -> _Site:
        server = await asyncio.to_thread(self._ensure_server)
        search = self._search_client(server.base_url)
        opener = PageOpener(config=self.fetch_config, pool=self._pool)
        return _Site(loop, server.base_url, server.port, search, opener)

    def _ensure_server(self) -> _Server:
        """The running site, started on its own thread and loop if needed (blocking; called in a thread)."""
        with self._server_lock:
            if self._server is not None and self._server.thread.is_alive():
                return self._server
            wiki = self._load_wiki()
            sock = _listen(self.host, self.port)
            port = sock.getsockname()[1]
            base_url = f"http://{self.host}:{port}" if ":" not in self.host else f"http://[{self.host}]:{port}"
            app = build_app(wiki, base_url=base_url, results_per_page=self.results_per_page, faults=self.faults)
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), name=f"drgym-miniweb-{port}", daemon=True)
            thread.start()
            runner = web.AppRunner(app, access_log=None)
            started = asyncio.run_coroutine_threadsafe(_start_runner(runner, sock), loop)
            try:
                started.result(timeout=_START_TIMEOUT_S)
            except BaseException:
                sock.close()
                loop.call_soon_threadsafe(loop.stop)
                raise
            self._server = _Server(loop, thread, runner, sock, base_url, port)
            with self._lock:
                self._ports.add(port)
            logger.debug("miniweb: serving %d articles of %r at %s", len(wiki), wiki.corpus, base_url)
            return self._server

    def _search_client(self, base_url: str) -> HttpSearchBackend:
        common = {
            "timeout_s": self.search_timeout_s,
            "limiter": TokenBucket(self.search_rps, max(1.0, self.search_rps)),
            "retry": self.search_retry,
        }
        if self.search_api == "serper":
            return SerperBackend(api_key=_SERPER_KEY, base_url=base_url + "/serper", **common)
        return SearxngBackend(base_url=base_url, language=None, **common)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BackendError(f"miniweb: cannot listen on {host}:{port}: {exc}") from None
    return sock


async def _stop(site: _Site) -> None:
    """Close one loop's clients (on that loop)."""
    try:
        await site.search.aclose()
    finally:
        await site.opener.aclose()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _start_runner(runner: web.AppRunner, sock: socket.socket) -> None:
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise


def _stop_server(server: _Server) -> None:
    """Stop the site's server and its loop (blocking; called in a thread)."""
    try:
        asyncio.run_coroutine_threadsafe(server.runner.cleanup(), server.loop).result(timeout=_CROSS_LOOP_CLOSE_S)
    except (concurrent.futures.TimeoutError, RuntimeError, OSError) as exc:
        logger.warning("miniweb: the site did not stop cleanly: %r", exc)
    finally:
        server.sock.close()
        if not server.loop.is_closed():
            server.loop.call_soon_threadsafe(server.loop.stop)
        server.thread.join(timeout=_CROSS_LOOP_CLOSE_S)
