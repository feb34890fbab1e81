"""Tavily: ``POST https://api.tavily.com/search`` with ``Authorization: Bearer tvly-...``.

Request ``{"query", "max_results", "search_depth", ...}`` (``max_results`` at most 20); response ``results[]``
with ``title``, ``url``, ``content`` (an extract chosen for the query) and ``score``. A basic search costs one
API credit, an advanced one two. Tavily answers 432/433 when a plan or pay-as-you-go limit is reached.
"""

from __future__ import annotations

from typing import Any

from drgym.errors import ConfigError
from drgym.search._http import HttpSearchBackend, ProviderRequest
from drgym.search.base import Result

__all__ = ["TavilyBackend"]


class TavilyBackend(HttpSearchBackend):
    """Results from Tavily's search API.

    Args:
        search_depth: ``"basic"`` (1 credit) or ``"advanced"`` (2 credits).
        topic: ``"general"`` or ``"news"``.
        **kwargs: See :class:`~drgym.search._http.HttpSearchBackend` (``api_key`` defaults to
            ``TAVILY_API_KEY``).
    """

    name = "tavily"
    api_key_env = "TAVILY_API_KEY"
    default_base_url = "https://api.tavily.com"
    default_rps = 5.0
    max_k = 20

    def __init__(self, *, search_depth: str = "basic", topic: str = "general", **kwargs: Any) -> None:
        if search_depth not in ("basic", "advanced"):
            raise ConfigError(f"tavily: search_depth must be 'basic' or 'advanced', got {search_depth!r}")
        if topic not in ("general", "news"):
            raise ConfigError(f"tavily: topic must be 'general' or 'news', got {topic!r}")
        super().__init__(**kwargs)
        self.search_depth = search_depth
        self.topic = topic

    @property
    def cost_units(self) -> float:
        """API credits per search, for spend estimates."""
        return 2.0 if self.search_depth == "advanced" else 1.0

    def _auth_hint(self) -> str:
        return "check TAVILY_API_KEY; 432/433 mean a plan or pay-as-you-go limit was reached"

    def _build_request(self, query: str, k: int) -> ProviderRequest:
        body = {
            "query": query,
            "max_results": k,
            "search_depth": self.search_depth,
            "topic": self.topic,
            "include_answer": False,
            "include_raw_content": False,
            "include_images": False,
        }
        return ProviderRequest(
            "POST",
            "/search",
            json_body=body,
            headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
        )

    def _parse(self, payload: Any, k: int) -> list[Result]:
        results = []
        for item in self._items(payload, "results"):
            extras = (
                {"score": item.get("score"), "date": item.get("published_date")}
                if isinstance(item, dict)
                else {}
            )
            result = self._result(
                item, url_key="url", title_key="title", snippet_key="content", extras=extras
            )
            if result is not None:
                results.append(result)
        return results
