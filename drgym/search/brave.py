"""Brave Search: ``GET https://api.search.brave.com/res/v1/web/search?q=&count=``, key in
``X-Subscription-Token``.

Response ``web.results[]`` with ``title``, ``url``, ``description`` (may hold ``<strong>`` highlights) and
``age``. ``count`` is at most 20 per request. On 429 Brave sends ``X-RateLimit-Reset`` (seconds until the
per-second and monthly windows reset); its first value stands in for a missing ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drgym.retry import parse_retry_after
from drgym.search._http import HttpSearchBackend, ProviderRequest
from drgym.search.base import Result

__all__ = ["BraveBackend"]


class BraveBackend(HttpSearchBackend):
    """Web results from Brave's own index.

    Args:
        country: Optional two-letter country code for the results (Brave's ``country``).
        search_lang: Optional language code (Brave's ``search_lang``).
        **kwargs: See :class:`~drgym.search._http.HttpSearchBackend` (``api_key`` defaults to
            ``BRAVE_API_KEY``). The free plan allows 1 request per second, hence the default ``rps``.
    """

    name = "brave"
    api_key_env = "BRAVE_API_KEY"
    default_base_url = "https://api.search.brave.com"
    default_rps = 1.0
    max_k = 20

    def __init__(self, *, country: str | None = None, search_lang: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.country = country
        self.search_lang = search_lang

    def _build_request(self, query: str, k: int) -> ProviderRequest:
        params = {"q": query, "count": str(k)}
        if self.country:
            params["country"] = self.country
        if self.search_lang:
            params["search_lang"] = self.search_lang
        return ProviderRequest(
            "GET",
            "/res/v1/web/search",
            params=params,
            headers={"X-Subscription-Token": self._api_key, "Accept": "application/json"},
        )

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        value = parse_retry_after(headers.get("Retry-After"))
        if value is None and headers.get("X-RateLimit-Reset"):
            value = parse_retry_after(headers["X-RateLimit-Reset"].split(",")[0])
        return value

    def _parse(self, payload: Any, k: int) -> list[Result]:
        results = []
        for item in self._items(payload, "web", "results"):
            extras = (
                {"age": item.get("age"), "page_age": item.get("page_age")} if isinstance(item, dict) else {}
            )
            result = self._result(
                item,
                url_key="url",
                title_key="title",
                snippet_key="description",
                extras={**extras, "date": extras.get("page_age") or extras.get("age")},
            )
            if result is not None:
                results.append(result)
        return results
