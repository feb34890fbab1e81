"""The gateway's JSON wire format: requests, answers and errors, shared by the server and the client.

Kept in one small module so both sides agree on field names and limits. Tool errors are answers, not HTTP
errors: ``{"error": {"type": "BudgetExceededError", "message": ...}}`` with status 200, raised again on the
client as the same :mod:`drgym.errors` class, so an env behind a gateway sees exactly what an in-process env
sees. HTTP statuses are kept for the transport: 400 (malformed request), 401 (token), 413 (too large), 503
(shutting down).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from drgym import errors as _errors
from drgym.browse.base import PageNotes
from drgym.document import Document
from drgym.errors import ToolError
from drgym.search.base import Result
from drgym.search.metering import EpisodeUsage

__all__ = [
    "API_PREFIX",
    "BUSY",
    "MAX_BODY_BYTES",
    "MAX_MEMORY_CHARS",
    "MAX_QUERY_CHARS",
    "MAX_URLS",
    "MAX_URL_CHARS",
    "TOKEN_ENV",
    "TOKEN_HEADER",
    "WireError",
    "document_from_json",
    "document_to_json",
    "error_to_json",
    "notes_from_json",
    "raise_error",
    "result_from_json",
    "result_to_json",
    "usage_from_json",
    "usage_to_json",
]

API_PREFIX = "/v1"
TOKEN_ENV = "DRGYM_GATEWAY_TOKEN"
"""Where clients and ``drgym serve`` read the shared token when none is passed."""
BUSY = "Busy"
"""Error type of the 503 a gateway at capacity answers (with ``Retry-After``); clients wait and send again."""
TOKEN_HEADER = "Authorization"
"""``Authorization: Bearer <token>``."""

MAX_BODY_BYTES = 1 << 20
"""Largest request body the gateway reads (1 MiB); larger ones get HTTP 413 and nothing is done."""
MAX_QUERY_CHARS = 2_048
MAX_URL_CHARS = 4_096
MAX_URLS = 32
"""URLs in one browse request."""
MAX_MEMORY_CHARS = 200_000
"""Notes gathered so far that a browse request may carry (an episode's memory holds 20,000 by default)."""


class WireError(ValueError):
    """A request that does not follow the wire format (HTTP 400 on the server)."""


def result_to_json(result: Result) -> dict[str, Any]:
    """One search hit as JSON; ``extras`` values that JSON cannot hold become strings."""
    extras = {
        str(k): v if v is None or isinstance(v, (str, int, float, bool, list, dict)) else str(v)
        for k, v in result.extras.items()
    }
    return {"title": result.title, "url": result.url, "snippet": result.snippet, "extras": extras}


def result_from_json(data: Mapping[str, Any]) -> Result:
    return Result(str(data["title"]), str(data["url"]), str(data["snippet"]), dict(data.get("extras") or {}))


def document_to_json(doc: Document) -> dict[str, Any]:
    return dataclasses.asdict(doc)


def document_from_json(data: Mapping[str, Any]) -> Document:
    return Document(
        url=str(data["url"]),
        title=str(data["title"]),
        content=str(data["content"]),
        content_type=str(data.get("content_type", "text/markdown")),
        source=str(data.get("source", "")),
    )


def notes_from_json(data: Mapping[str, Any]) -> PageNotes:
    return PageNotes(
        url=str(data["url"]),
        title=str(data["title"]),
        notes=str(data["notes"]),
        segments_read=int(data["segments_read"]),
        segments_total=int(data["segments_total"]),
        error=None if data.get("error") is None else str(data["error"]),
        elapsed_s=float(data.get("elapsed_s", 0.0)),
    )


def usage_to_json(usage: EpisodeUsage) -> dict[str, Any]:
    return {
        "calls": usage.calls,
        "failures": usage.failures,
        "cache_hits": usage.cache_hits,
        "est_spend_usd": usage.est_spend_usd,
    }


def usage_from_json(data: Mapping[str, Any], into: EpisodeUsage) -> None:
    """Copy the gateway's counts of an episode into the client's record of it."""
    into.calls = int(data.get("calls", into.calls))
    into.failures = int(data.get("failures", into.failures))
    into.cache_hits = int(data.get("cache_hits", into.cache_hits))
    into.est_spend_usd = float(data.get("est_spend_usd", into.est_spend_usd))


def error_to_json(exc: BaseException, message: str) -> dict[str, Any]:
    """``{"type", "base", "message"}``: the class, its nearest :mod:`drgym.errors` base, the (redacted) text."""
    base = next(
        (c.__name__ for c in type(exc).__mro__ if getattr(_errors, c.__name__, None) is c),
        "ToolError",
    )
    return {"type": type(exc).__name__, "base": base, "message": message}


def raise_error(data: Mapping[str, Any]) -> None:
    """Raise the error the gateway reported, as the same :mod:`drgym.errors` class (or its nearest base)."""
    message = str(data.get("message", ""))
    for name in (data.get("type"), data.get("base")):
        cls = getattr(_errors, str(name or ""), None)
        if isinstance(cls, type) and issubclass(cls, _errors.DrgymError):
            raise cls(message)
    raise ToolError(message)
