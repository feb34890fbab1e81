"""SearxNG (self-hosted metasearch): ``GET {base}/search?q=&format=json``, the base from ``SEARXNG_URL``.

Response ``results[]`` with ``title``, ``url``, ``content``, ``engine`` and ``publishedDate``. There is no
result-count parameter: one page (about 10 to 20 results) is read and cut to ``k``. The instance must list
``json`` under ``search.formats`` in its ``settings.yml``, or it answers 403.
"""

from __future__ import annotations

from typing import Any

from drgym.search._http import HttpSearchBackend, ProviderRequest
from drgym.search.base import Result

__all__ = ["SearxngBackend"]


class SearxngBackend(HttpSearchBackend):
    """Results from a SearxNG instance.

    Args:
        language: SearxNG ``language`` (e.g. ``"en"``; ``None`` = the instance default).
        categories: SearxNG ``categories`` (comma-separated).
        **kwargs: See :class:`~drgym.search._http.HttpSearchBackend` (``base_url`` defaults to
            ``SEARXNG_URL``; no key is needed).
    """

    name = "searxng"
    base_url_env = "SEARXNG_URL"
    default_rps = 2.0
    max_k = 50

    def __init__(self, *, language: str | None = "en", categories: str = "general", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.language = language
        self.categories = categories

    def _auth_hint(self) -> str:
        return "is `json` listed under search.formats in the instance's settings.yml?"

    def _build_request(self, query: str, k: int) -> ProviderRequest:
        params = {"q": query, "format": "json", "pageno": "1", "categories": self.categories}
        if self.language:
            params["language"] = self.language
        return ProviderRequest("GET", "/search", params=params, headers={"Accept": "application/json"})

    def _parse(self, payload: Any, k: int) -> list[Result]:
        results = []
        for item in self._items(payload, "results"):
            extras = (
                {"engine": item.get("engine"), "date": item.get("publishedDate"), "score": item.get("score")}
                if isinstance(item, dict)
                else {}
            )
            result = self._result(
                item, url_key="url", title_key="title", snippet_key="content", extras=extras
            )
            if result is not None:
                results.append(result)
        return results
