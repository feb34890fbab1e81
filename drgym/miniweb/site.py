"""The mini-web site: a corpus served as an offline website with a SearxNG-compatible search API.

Routes (all ``GET``; ``HEAD`` too):

* ``/wiki/<quoted title>``: one article per title (the corpus's passages of that title, in order), as a full
  HTML page with the boilerplate of a real site around it (:mod:`drgym.miniweb.render`);
* ``/search?q=&format=json&pageno=``: SearxNG's JSON API (``results[]`` with ``title``, ``url``, ``content``,
  ``engine``...), ranked by BM25 over the passages, one result per article; without ``format`` the same
  results as an HTML page;
* ``POST /serper/search``: Serper's API over the same ranking (``{"q", "num", "page"}`` in the JSON body;
  ``organic[]`` with ``title``, ``link``, ``snippet``, ``position``); ``X-API-KEY`` is accepted and ignored;
* ``/robots.txt``, ``/`` (the main page), and a 404 page for anything else.

Latency and faults (429, 503, connection resets, slow drip) can be injected into every route but
``/robots.txt``, with a seed (:class:`~drgym.miniweb.faults.FaultConfig`).

Pages are gzip-compressed when the client accepts it, so the fetcher's decompression path runs too.
The content (:class:`MiniWiki`) is built once and can be served by several apps (one per event loop).

Each app keeps the rendered and compressed bytes of the articles it served last (an LRU of
``article_cache_size`` entries): an article is rendered and compressed once, not once per request. Rendering and
compressing on every request cost the site's event loop CPU, and aiohttp compresses a body over 4 KiB on
asyncio's *default* thread pool, the one BM25 searches and SQLite calls wait in: with thousands of episodes in
flight on one loop, searches queued behind page compression until they timed out.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from drgym.data.records import Passage
from drgym.errors import ConfigError, DataError
from drgym.miniweb.faults import FaultConfig, fault_middleware
from drgym.miniweb.render import (
    ArticleView,
    SearchHit,
    article_path,
    render_article,
    render_home,
    render_not_found,
    render_search,
)
from drgym.search.local import BM25Backend

if TYPE_CHECKING:
    from drgym.services import ToolServices

__all__ = ["ENGINE", "MiniWiki", "build_app", "create_app", "load_wiki"]

logger = logging.getLogger(__name__)

ENGINE = "miniweb"
"""The ``engine`` every search result names."""

_WIKI: web.AppKey[MiniWiki] = web.AppKey("miniweb_wiki")
_BASE_URL: web.AppKey[str | None] = web.AppKey("miniweb_base_url")
_PAGE_SIZE: web.AppKey[int] = web.AppKey("miniweb_page_size")
_ARTICLES: web.AppKey[_ArticleCache] = web.AppKey("miniweb_article_bytes")
_RELATED = 3  # sidebar links on each side of an article, in corpus order (neighbours are often related)
_MAX_PAGENO = 50
_SERPER_MAX_NUM = 100
_MAX_QUERY_CHARS = 2048
_HTML = "text/html"
_ROBOTS = "User-agent: *\nDisallow: /search\nAllow: /wiki/\n"


class MiniWiki:
    """The site's content: one article per title, and a BM25 index over the passages for the search API.

    Args:
        passages: The corpus; passages sharing a title form one article, in corpus order. A passage with an
            empty title is an article of its own, titled by its id.
        corpus: The corpus name (shown on pages, and the index cache key).
        index: A BM25 index built over exactly these passages (e.g. the ``local`` backend's shared one); by
            default one is built (and cached on disk like the ``local`` backend's).

    Raises:
        DataError: No passages, or an index over other passages.
    """

    def __init__(self, passages: Sequence[Passage], *, corpus: str, index: BM25Backend | None = None) -> None:
        if not isinstance(corpus, str) or not corpus.strip():
            raise ConfigError(f"corpus must be a non-empty name, got {corpus!r}")
        passages = tuple(passages)
        if not passages:
            raise DataError(f"corpus {corpus!r} has no passages to serve")
        if index is not None and len(index) != len(passages):
            raise DataError(
                f"the index given holds {len(index)} passages, the corpus {corpus!r} {len(passages)}"
            )
        self.corpus = corpus
        paragraphs: dict[str, list[str]] = {}
        sources: dict[str, set[str]] = {}
        for passage in passages:
            title = passage.title or passage.id
            paragraphs.setdefault(title, []).append(passage.text)
            sources.setdefault(title, set()).add(passage.source)
        self._articles = {
            title: ArticleView(title, tuple(texts), tuple(sorted(sources[title])))
            for title, texts in paragraphs.items()
        }
        self.titles: tuple[str, ...] = tuple(self._articles)
        self._position = {title: i for i, title in enumerate(self.titles)}
        self.index = index if index is not None else BM25Backend(passages, corpus=corpus)

    def __len__(self) -> int:
        return len(self.titles)

    def article(self, title: str) -> ArticleView | None:
        """The article called ``title`` exactly, or ``None``."""
        return self._articles.get(title)

    def related(self, title: str) -> list[str]:
        """The titles next to ``title`` in corpus order (the sidebar's links)."""
        i = self._position[title]
        return [*self.titles[max(0, i - _RELATED) : i], *self.titles[i + 1 : i + 1 + _RELATED]]

    async def search(
        self, query: str, *, count: int, page: int = 1
    ) -> tuple[list[tuple[str, str, float]], int]:
        """One page of ``(title, snippet, score)`` rows for ``query``, best article first; and the rows found.

        Passages are ranked by BM25 and folded into their articles (an article's rank is its best passage's);
        passages are fetched in growing batches until the page is full or the corpus is exhausted.
        """
        wanted = count * page
        limit = min(len(self.index), max(4 * wanted, 20))
        while True:
            passages = await self.index.search(query[:_MAX_QUERY_CHARS], limit)
            rows: dict[str, tuple[str, str, float]] = {}
            for hit in passages:
                rows.setdefault(hit.title, (hit.title, hit.snippet, float(hit.extras.get("score", 0.0))))
            if len(rows) >= wanted or len(passages) < limit or limit >= len(self.index):
                ordered = list(rows.values())
                return ordered[wanted - count : wanted], len(ordered)
            limit = min(len(self.index), limit * 4)


def load_wiki(corpus: str, services: ToolServices | None = None) -> MiniWiki:
    """The content of a named corpus (``drgym.data.list_corpora()``) and its BM25 index.

    With ``services``, the index is theirs (``services.backend("local", name=corpus)``: one copy in memory with
    the envs given them); else a new one (from the same on-disk index cache). Loading and indexing a large
    corpus takes seconds: call it from a worker thread in async code.
    """
    index = services.backend("local", name=corpus) if services is not None else BM25Backend.from_corpus(corpus)
    if isinstance(index, BM25Backend):
        return MiniWiki(index.passages, corpus=corpus, index=index)
    from drgym.data import load_corpus  # `local` re-registered to something else: build our own

    return MiniWiki(load_corpus(corpus), corpus=corpus)


def create_app(
    passages: Sequence[Passage],
    *,
    corpus: str,
    base_url: str | None = None,
    results_per_page: int = 10,
    faults: FaultConfig | None = None,
) -> web.Application:
    """The site for ``passages`` (see the module docstring); builds its content and search index first.

    Args:
        passages: The corpus to serve.
        corpus: Its name.
        base_url: The site's own ``scheme://host:port``, used in result URLs; by default taken from each
            request's ``Host``.
        results_per_page: Results per page of the SearxNG API (SearxNG serves about 10).
        faults: Latency and faults to inject (none by default).
    """
    return build_app(
        MiniWiki(passages, corpus=corpus), base_url=base_url, results_per_page=results_per_page, faults=faults
    )


class _ArticleCache:
    """The last ``size`` articles an app served, as (UTF-8 HTML, gzip of it): rendered and compressed once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._bodies: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()

    def get(self, title: str, render: Any) -> tuple[bytes, bytes]:
        bodies = self._bodies.get(title)
        if bodies is not None:
            self._bodies.move_to_end(title)
            return bodies
        html = render().encode("utf-8")
        bodies = (html, gzip.compress(html, compresslevel=6, mtime=0))
        if self.size:
            self._bodies[title] = bodies
            if len(self._bodies) > self.size:
                self._bodies.popitem(last=False)
        return bodies


def build_app(
    wiki: MiniWiki,
    *,
    base_url: str | None = None,
    results_per_page: int = 10,
    faults: FaultConfig | None = None,
    article_cache_size: int = 4096,
) -> web.Application:
    """The site for already built content (cheap: many apps can serve one :class:`MiniWiki`).

    ``article_cache_size``: articles whose rendered, compressed bytes are kept (0: render every request).
    """
    if isinstance(article_cache_size, bool) or not isinstance(article_cache_size, int) or article_cache_size < 0:
        raise ConfigError(f"article_cache_size must be a non-negative integer, got {article_cache_size!r}")
    if isinstance(results_per_page, bool) or not isinstance(results_per_page, int) or results_per_page < 1:
        raise ConfigError(f"results_per_page must be a positive integer, got {results_per_page!r}")
    if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"base_url must be an http(s) origin like http://127.0.0.1:8080, got {base_url!r}")
    if faults is not None and not isinstance(faults, FaultConfig):
        raise ConfigError(f"faults must be a drgym.miniweb.FaultConfig, got {type(faults).__name__}")
    middlewares = [fault_middleware(faults)] if faults is not None and faults.active else []
    app = web.Application(middlewares=middlewares)
    app[_WIKI] = wiki
    app[_BASE_URL] = base_url.rstrip("/") if base_url else None
    app[_PAGE_SIZE] = results_per_page
    app[_ARTICLES] = _ArticleCache(article_cache_size)
    app.router.add_get("/", _home)
    app.router.add_get("/robots.txt", _robots)
    app.router.add_get("/search", _search)
    app.router.add_post("/serper/search", _serper_search)
    app.router.add_get("/wiki/{title:.*}", _article)
    app.router.add_get("/{tail:.*}", _not_found)
    return app


def _origin(request: web.Request) -> str:
    return request.app[_BASE_URL] or str(request.url.origin())


def _html(request: web.Request, text: str, *, status: int = 200) -> web.Response:
    response = web.Response(text=text, status=status, content_type=_HTML, charset="utf-8")
    response.headers["Cache-Control"] = "public, max-age=3600"
    if len(text) > 1024:
        response.enable_compression()  # gzip or deflate, as the client's Accept-Encoding allows
    return response


async def _home(request: web.Request) -> web.Response:
    wiki = request.app[_WIKI]
    return _html(request, render_home(wiki.titles[:50], corpus=wiki.corpus, total=len(wiki)))


async def _robots(request: web.Request) -> web.Response:
    return web.Response(text=_ROBOTS, content_type="text/plain", charset="utf-8")


async def _not_found(request: web.Request) -> web.Response:
    wiki = request.app[_WIKI]
    return _html(request, render_not_found(request.path[:300], corpus=wiki.corpus), status=404)


async def _article(request: web.Request) -> web.Response:
    wiki = request.app[_WIKI]
    # The raw path, so a quoted "/" inside a title (AC%2FDC) is told apart from a path separator.
    title = unquote(request.rel_url.raw_path.removeprefix("/wiki/"), errors="replace")
    article = wiki.article(title)
    if article is None:
        return await _not_found(request)
    html, compressed = request.app[_ARTICLES].get(
        title, lambda: render_article(article, corpus=wiki.corpus, related=wiki.related(title))
    )
    headers = {"Cache-Control": "public, max-age=3600", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=compressed, headers=headers, content_type=_HTML, charset="utf-8")
    return web.Response(body=html, headers=headers, content_type=_HTML, charset="utf-8")


async def _search(request: web.Request) -> web.StreamResponse:
    wiki = request.app[_WIKI]
    query = request.query.get("q", "").strip()
    fmt = request.query.get("format", "html")
    if fmt not in ("json", "html"):
        # A SearxNG instance answers 403 for a format its settings.yml does not enable.
        return web.Response(status=403, text=f"format {fmt[:20]!r} is not enabled", content_type="text/plain")
    try:
        page = int(request.query.get("pageno", "1"))
    except ValueError:
        page = 0
    if not 1 <= page <= _MAX_PAGENO:
        return web.json_response({"error": f"pageno must be an integer from 1 to {_MAX_PAGENO}"}, status=400)
    count = request.app[_PAGE_SIZE]
    rows, found = await wiki.search(query, count=count, page=page) if query else ([], 0)
    origin = _origin(request)
    if fmt == "html":
        hits = [SearchHit(title, origin + article_path(title), snippet) for title, snippet, _ in rows]
        return _html(request, render_search(query, hits, corpus=wiki.corpus))
    first = (page - 1) * count
    results = [
        {
            "url": origin + article_path(title),
            "title": title,
            "content": snippet,
            "engine": ENGINE,
            "engines": [ENGINE],
            "positions": [first + i],
            "score": round(score, 6) if math.isfinite(score) else 0.0,
            "category": "general",
            "template": "default.html",
            "parsed_url": ["http", origin.split("://", 1)[-1], article_path(title), "", "", ""],
            "publishedDate": None,
        }
        for i, (title, snippet, score) in enumerate(rows, start=1)
    ]
    payload = {
        "query": query,
        "number_of_results": found,
        "results": results,
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [],
        "unresponsive_engines": [],
    }
    return web.json_response(payload)


def _serper_error(message: str, status: int) -> web.Response:
    return web.json_response({"message": message, "statusCode": status}, status=status)


def _int_field(body: dict[str, Any], name: str, default: int, top: int) -> int | None:
    value = body.get(name, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        return None
    return value


async def _serper_search(request: web.Request) -> web.Response:
    """Serper's ``POST /search``: ``{"q", "num", "page", "gl", "hl"}`` → ``organic[]`` (key not checked)."""
    wiki = request.app[_WIKI]
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _serper_error("The request body must be a JSON object.", 400)
    if not isinstance(body, dict):
        return _serper_error("The request body must be a JSON object.", 400)
    query = body.get("q")
    if not isinstance(query, str) or not query.strip():
        return _serper_error("Query `q` is required.", 400)
    num = _int_field(body, "num", 10, _SERPER_MAX_NUM)
    page = _int_field(body, "page", 1, _MAX_PAGENO)
    if num is None or page is None:
        return _serper_error(f"`num` must be 1 to {_SERPER_MAX_NUM} and `page` 1 to {_MAX_PAGENO}.", 400)
    query = query.strip()
    rows, _ = await wiki.search(query, count=num, page=page)
    origin = _origin(request)
    first = (page - 1) * num
    organic = [
        {"title": title, "link": origin + article_path(title), "snippet": snippet, "position": first + i}
        for i, (title, snippet, _) in enumerate(rows, start=1)
    ]
    parameters = {"q": query, "type": "search", "num": num, "page": page, "engine": "google"}
    for key in ("gl", "hl"):
        if isinstance(body.get(key), str):
            parameters[key] = body[key]
    return web.json_response({"searchParameters": parameters, "organic": organic, "credits": 1})
