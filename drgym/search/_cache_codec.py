"""Keys and values of the search store: how a request is normalised and how an answer is written.

Keys are *normalised* so that trivially different spellings of one request share an entry:

* a query is stripped with its whitespace collapsed (case, accents and punctuation are kept: most engines
  ignore case, but not all, and a miss costs less than a wrong answer);
* an http(s) URL gets its scheme and host lowercased, default port and fragment dropped, an empty path written
  ``/``; path and query are kept exactly (they are case-sensitive on most servers);
* provider options become canonical JSON, so two configurations never share an entry.

Keys are stored as bytes and values as JSON with ASCII escapes, so any Python string (lone surrogates and NULs
included) comes back exactly as it went in: replay is byte-for-byte. A value is either ``{"value": ...}`` or
``{"error": {"type", "base", "message"}}``, the error a recorded call raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drgym.document import Document
from drgym.errors import ConfigError
from drgym.search.base import Result

__all__ = [
    "KINDS",
    "StoredEntry",
    "decode_entry",
    "doc_to_obj",
    "dumps",
    "encode_key",
    "encode_payload",
    "is_error_payload",
    "normalize_query",
    "normalize_url",
    "options_key",
    "results_from_json",
    "results_to_json",
    "results_to_obj",
    "search_key",
    "url_key",
]

KINDS = ("search", "document")
"""What an entry holds: the results of a search, or an opened document."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class StoredEntry:
    """One stored answer: ``value`` (results or a document) or the error the call raised."""

    value: Any
    error_type: str | None
    error_message: str | None
    created: float
    pinned: bool = False
    error_base: str | None = None
    """The nearest class of :mod:`drgym.errors` the recorded error belongs to (what replay raises)."""

    @property
    def is_error(self) -> bool:
        """True when the recorded call raised instead of answering."""
        return self.error_type is not None


# --------------------------------------------------------------------------- keys


def normalize_query(query: str) -> str:
    """The cache key of a query: stripped, whitespace runs collapsed to one space; case is kept."""
    return " ".join(query.split())


def normalize_url(url: str) -> str:
    """The cache key of an http(s) URL: scheme/host lowercased, default port and fragment dropped.

    Anything that is not a well-formed http(s) URL is only stripped, never rejected: the store keys what the
    backend was asked, hostile strings included.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.netloc:
            return text
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port or bracket: keep the text as it came
        return text
    if not host:
        return text
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def options_key(options: Mapping[str, Any] | str | None) -> str:
    """Canonical JSON of provider options (sorted keys); a ``str`` is taken as already canonical."""
    if isinstance(options, str):
        return options
    return json.dumps(
        dict(options or {}), sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=_json_default
    )


def encode_key(text: str) -> bytes:
    """A key as stored: bytes, so that any ``str`` (even one with lone surrogates) can be a key."""
    return text.encode("utf-8", "surrogatepass")


def search_key(query: str) -> bytes:
    """The stored key of a search query."""
    return encode_key(normalize_query(query))


def url_key(url: str) -> bytes:
    """The stored key of a document URL."""
    return encode_key(normalize_url(url))


# --------------------------------------------------------------------------- values


def _json_default(value: Any) -> Any:
    # numpy scalars (BM25 scores) become Python numbers; anything else is a bug in the backend's extras.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in search results: extras must be JSON values")


def dumps(obj: Any) -> str:
    """Compact ASCII JSON, numpy scalars and sets included, as every line and payload of the store is written."""
    return json.dumps(obj, ensure_ascii=True, default=_json_default, separators=(",", ":"))


def results_to_obj(results: list[Result]) -> list[dict[str, Any]]:
    """Results as plain JSON objects."""
    return [{"title": r.title, "url": r.url, "snippet": r.snippet, "extras": r.extras} for r in results]


def _results_from_obj(items: list[dict[str, Any]]) -> list[Result]:
    return [Result(d["title"], d["url"], d["snippet"], d.get("extras") or {}) for d in items]


def results_to_json(results: list[Result]) -> str:
    """Serialise results exactly (extras included), as the store does."""
    return dumps(results_to_obj(results))


def results_from_json(text: str) -> list[Result]:
    """Inverse of :func:`results_to_json`."""
    return _results_from_obj(json.loads(text))


def doc_to_obj(doc: Document) -> dict[str, str]:
    """A document as a plain JSON object."""
    return {
        "url": doc.url,
        "title": doc.title,
        "content": doc.content,
        "content_type": doc.content_type,
        "source": doc.source,
    }


def _error_base(error: BaseException) -> str | None:
    from drgym import errors

    for cls in type(error).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            return cls.__name__
    return None


def encode_payload(value: Any, error: BaseException | None) -> str:
    """The stored text of an answer (``value``) or of the error the call raised.

    Raises:
        ConfigError: the value holds something that is not JSON (a backend's bad ``extras``).
    """
    if error is not None:
        err = {"type": type(error).__name__, "base": _error_base(error), "message": str(error)}
        return dumps({"error": err})
    try:
        return dumps({"value": value})
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def is_error_payload(text: str) -> bool:
    """Whether a stored payload records an error (cheap: payloads are written by :func:`encode_payload`)."""
    return text.startswith('{"error"')


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "search": _results_from_obj,
    "document": lambda v: Document(**v),
}


def decode_entry(kind: str, text: str, created: float, pinned: bool) -> StoredEntry:
    """The entry a stored payload holds.

    Raises:
        ValueError, KeyError, TypeError: the payload is not one :func:`encode_payload` wrote (a corrupt file).
    """
    data = json.loads(text)
    if "error" in data:
        err = data["error"]
        base = err.get("base")
        return StoredEntry(None, str(err["type"]), str(err["message"]), created, pinned, base and str(base))
    return StoredEntry(_DECODERS[kind](data["value"]), None, None, created, pinned)
