"""A loopback aiohttp server that speaks the search providers' documented HTTP APIs, with fault injection.

Mounted under one prefix per provider so one server serves all of them:

* ``POST /serper/search``           Serper (``X-API-KEY``; ``{q, num, gl, hl}`` → ``organic[]`` ...)
* ``GET  /brave/res/v1/web/search`` Brave (``X-Subscription-Token``; ``?q=&count=`` → ``web.results[]``)
* ``POST /tavily/search``           Tavily (``Authorization: Bearer``; ``{query, max_results}`` → ``results``)
* ``GET  /searxng/search``          SearxNG (``?q=&format=json`` → ``results[]``)
* ``GET  /pages/{name}``            plain HTML pages, for page readers

Each request is recorded (method, path, headers, query, JSON body). Faults are queued per provider and
consumed one per request: ``server.fail("serper", Fault.status(429, retry_after="0.05"))``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

KEYS = {"serper": "serper-test-key-0123", "brave": "brave-test-key-4567", "tavily": "tvly-test-key-89ab"}
SEARXNG_PAGE_SIZE = 10


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next request of a provider."""

    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0

    @classmethod
    def status_code(
        cls,
        status: int,
        *,
        retry_after: str | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Fault:
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = retry_after
        return cls("status", status=status, headers=hdrs, body=body or b'{"message": "injected"}')

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Answer normally, but only after ``delay_s`` (longer than the client's timeout)."""
        return cls("slow", delay_s=delay_s)

    @classmethod
    def malformed(cls) -> Fault:
        return cls(
            "raw", status=200, headers={"Content-Type": "application/json"}, body=b'{"organic": [{"tit'
        )

    @classmethod
    def raw(cls, body: bytes, status: int = 200) -> Fault:
        return cls("raw", status=status, headers={"Content-Type": "application/json"}, body=body)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without an answer."""
        return cls("drop")


@dataclass
class Seen:
    """A request as the server received it."""

    provider: str
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any


def _slug(query: str) -> str:
    return hashlib.sha1(query.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def _hits(query: str, n: int) -> list[dict[str, str]]:
    """Deterministic fake hits for ``query``; snippets carry markup and entities, as real ones do."""
    slug = _slug(query)
    return [
        {
            "title": f"{query} &amp; result {i}",
            "url": f"https://example.org/{slug}/{i}",
            "snippet": f"About <b>{query}</b>: fact number {i} &mdash; x &lt; {i + 1}.",
        }
        for i in range(1, n + 1)
    ]


class ProviderServer:
    """The loopback server; use as ``async with ProviderServer() as server``."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.faults: dict[str, deque[Fault]] = {}
        self.pages: dict[str, str] = {}
        app = web.Application()
        app.router.add_post("/serper/search", self._serper)
        app.router.add_get("/brave/res/v1/web/search", self._brave)
        app.router.add_post("/tavily/search", self._tavily)
        app.router.add_get("/searxng/search", self._searxng)
        app.router.add_get("/pages/{name}", self._page)
        self._server = TestServer(app)

    async def __aenter__(self) -> ProviderServer:  # noqa: PYI034
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()

    def base_url(self, provider: str) -> str:
        """What to pass as ``base_url`` to a provider backend."""
        return str(self._server.make_url(f"/{provider}"))

    def page_url(self, name: str) -> str:
        return str(self._server.make_url(f"/pages/{name}"))

    def fail(self, provider: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``provider``."""
        self.faults.setdefault(provider, deque()).extend(faults)

    def seen(self, provider: str) -> list[Seen]:
        return [r for r in self.requests if r.provider == provider]

    # ----------------------------------------------------------------- plumbing

    async def _record(self, provider: str, request: web.Request) -> Seen:
        body: Any = None
        if request.method == "POST":
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        seen = Seen(provider, request.method, request.path, dict(request.headers), dict(request.query), body)
        self.requests.append(seen)
        return seen

    async def _fault(self, provider: str, request: web.Request) -> web.StreamResponse | None:
        queue = self.faults.get(provider)
        if not queue:
            return None
        fault = queue.popleft()
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return None
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        return web.Response(status=fault.status, body=fault.body, headers=fault.headers)

    # ----------------------------------------------------------------- providers

    async def _serper(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record("serper", request)
        if request.headers.get("X-API-KEY") != KEYS["serper"]:
            return web.json_response({"message": "Unauthorized.", "statusCode": 403}, status=403)
        fault = await self._fault("serper", request)
        if fault is not None:
            return fault
        body = seen.body
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("q"), str)
            or not isinstance(body.get("num"), int)
        ):
            return web.json_response({"message": "Query `q` is required.", "statusCode": 400}, status=400)
        q, num = body["q"], body["num"]
        organic = [
            {
                "title": h["title"],
                "link": h["url"],
                "snippet": h["snippet"],
                "position": i,
                **({"date": "Mar 3, 2024"} if i == 1 else {}),
                **({"sitelinks": [{"title": "More", "link": h["url"] + "/more"}]} if i == 2 else {}),
            }
            for i, h in enumerate(_hits(q, min(num, 100)), start=1)
        ]
        payload: dict[str, Any] = {
            "searchParameters": {
                "q": q,
                "gl": body.get("gl"),
                "hl": body.get("hl"),
                "num": num,
                "type": "search",
                "engine": "google",
            },
            "organic": organic,
            "peopleAlsoAsk": [
                {"question": f"What is {q}?", "snippet": "...", "link": "https://example.com/faq"}
            ],
            "relatedSearches": [{"query": f"{q} history"}],
            "credits": 1,
        }
        if q.startswith("who"):
            payload["answerBox"] = {
                "title": q,
                "answer": "Ada &amp; Lovelace",
                "link": "https://example.com/ada",
            }
            payload["knowledgeGraph"] = {
                "title": "Ada Lovelace",
                "type": "Mathematician",
                "description": "English <i>mathematician</i>.",
                "attributes": {"Born": "10 December 1815"},
            }
        return web.json_response(payload)

    async def _brave(self, request: web.Request) -> web.StreamResponse:
        await self._record("brave", request)
        if request.headers.get("X-Subscription-Token") != KEYS["brave"]:
            return web.json_response(
                {
                    "type": "ErrorResponse",
                    "error": {
                        "id": "0f5a",
                        "status": 401,
                        "code": "SUBSCRIPTION_TOKEN_INVALID",
                        "detail": "The provided subscription token is invalid.",
                    },
                },
                status=401,
            )
        fault = await self._fault("brave", request)
        if fault is not None:
            return fault
        q = request.query.get("q", "")
        try:
            count = int(request.query.get("count", "20"))
        except ValueError:
            count = -1
        if not q or not 1 <= count <= 20:
            return web.json_response(
                {
                    "type": "ErrorResponse",
                    "error": {
                        "id": "1b2c",
                        "status": 422,
                        "code": "VALIDATION",
                        "detail": "Unable to validate request parameter(s)",
                    },
                },
                status=422,
            )
        results = [
            {
                "type": "search_result",
                "title": h["title"],
                "url": h["url"],
                "description": h["snippet"].replace("<b>", "<strong>").replace("</b>", "</strong>"),
                "age": "2 days ago",
                "page_age": "2024-05-01T10:00:00",
                "language": "en",
                "family_friendly": True,
                "profile": {"name": "Example", "url": h["url"]},
                "meta_url": {"scheme": "https", "hostname": "example.org"},
            }
            for h in _hits(q, count)
        ]
        return web.json_response(
            {
                "type": "search",
                "query": {"original": q, "more_results_available": True},
                "web": {"type": "search", "results": results, "family_friendly": True},
            },
            headers={"X-RateLimit-Limit": "1, 15000", "X-RateLimit-Remaining": "0, 14000"},
        )

    async def _tavily(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record("tavily", request)
        if request.headers.get("Authorization") != f"Bearer {KEYS['tavily']}":
            return web.json_response(
                {"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401
            )
        fault = await self._fault("tavily", request)
        if fault is not None:
            return fault
        body = seen.body
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return web.json_response({"detail": {"error": "Query is missing."}}, status=400)
        max_results = body.get("max_results", 5)
        if not isinstance(max_results, int) or not 0 < max_results <= 20:
            return web.json_response(
                {"detail": {"error": "max_results must be between 1 and 20"}}, status=400
            )
        results = [
            {
                "title": h["title"],
                "url": h["url"],
                "content": h["snippet"],
                "score": round(0.9 - i / 100, 4),
                "raw_content": None,
            }
            for i, h in enumerate(_hits(body["query"], max_results))
        ]
        return web.json_response(
            {
                "query": body["query"],
                "follow_up_questions": None,
                "answer": None,
                "images": [],
                "results": results,
                "response_time": 0.42,
            }
        )

    async def _searxng(self, request: web.Request) -> web.StreamResponse:
        await self._record("searxng", request)
        if request.query.get("format") != "json":
            return web.Response(
                status=403, text="<html><body>403 Forbidden</body></html>", content_type="text/html"
            )
        fault = await self._fault("searxng", request)
        if fault is not None:
            return fault
        q = request.query.get("q", "")
        results = [
            {
                "url": h["url"],
                "title": h["title"],
                "content": h["snippet"],
                "engine": "duckduckgo",
                "engines": ["duckduckgo", "wikipedia"],
                "positions": [i],
                "score": 2.0 / i,
                "category": "general",
                "template": "default.html",
                "parsed_url": ["https", "example.org", "/", "", "", ""],
                "publishedDate": "2024-01-02T00:00:00" if i == 1 else None,
            }
            for i, h in enumerate(_hits(q, SEARXNG_PAGE_SIZE), start=1)
        ]
        return web.json_response(
            {
                "query": q,
                "number_of_results": 0,
                "results": results,
                "answers": [],
                "corrections": [],
                "infoboxes": [],
                "suggestions": [],
                "unresponsive_engines": [],
            }
        )

    async def _page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.pages:
            return web.Response(status=404, text="not found")
        return web.Response(text=self.pages[name], content_type="text/html")
