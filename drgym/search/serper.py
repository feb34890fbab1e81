"""Serper (Google results): ``POST https://google.serper.dev/search`` with the key in ``X-API-KEY``.

Request ``{"q", "num", "gl", "hl"}``; response ``organic[]`` items with ``title``, ``link``, ``snippet``,
``date``, ``position``. The paper used Serper with ``num=10, gl=us, hl=en``. A knowledge-graph panel or answer
box, when Google shows one, rides in ``extras`` of the first result (``knowledge_graph``, ``answer_box``).
"""

from __future__ import annotations

from typing import Any

from drgym.errors import BackendError
from drgym.search._http import HttpSearchBackend, ProviderRequest, clean_text
from drgym.search.base import Result

__all__ = ["SerperBackend"]

_BOX_FIELDS = ("title", "answer", "snippet", "link", "date")
_GRAPH_FIELDS = ("title", "type", "description", "descriptionSource", "descriptionLink", "website")


class SerperBackend(HttpSearchBackend):
    """Google results through Serper.

    Args:
        gl: Country of the results (Google's ``gl``).
        hl: Interface language (Google's ``hl``).
        **kwargs: See :class:`~drgym.search._http.HttpSearchBackend` (``api_key`` defaults to
            ``SERPER_API_KEY``).
    """

    name = "serper"
    api_key_env = "SERPER_API_KEY"
    default_base_url = "https://google.serper.dev"
    default_rps = 5.0
    max_k = 100

    def __init__(self, *, gl: str = "us", hl: str = "en", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gl = gl
        self.hl = hl

    def _build_request(self, query: str, k: int) -> ProviderRequest:
        return ProviderRequest(
            "POST",
            "/search",
            json_body={"q": query, "num": k, "gl": self.gl, "hl": self.hl},
            headers={"X-API-KEY": self._api_key, "Content-Type": "application/json"},
        )

    def _parse(self, payload: Any, k: int) -> list[Result]:
        items = self._items(payload, "organic")
        if not items and "organic" not in payload and ("message" in payload or "error" in payload):
            detail = clean_text(str(payload.get("message") or payload.get("error")))[:300]
            raise BackendError(f"serper: the provider answered with an error: {detail}")
        results = []
        for item in items:
            result = self._result(
                item,
                url_key="link",
                title_key="title",
                snippet_key="snippet",
                extras={
                    "date": item.get("date") if isinstance(item, dict) else None,
                    "position": item.get("position") if isinstance(item, dict) else None,
                },
            )
            if result is not None:
                results.append(result)
        panels = {
            "answer_box": _panel(payload.get("answerBox"), _BOX_FIELDS),
            "knowledge_graph": _panel(payload.get("knowledgeGraph"), _GRAPH_FIELDS, attributes=True),
        }
        panels = {key: value for key, value in panels.items() if value}
        if results and panels:
            first = results[0]
            results[0] = Result(first.title, first.url, first.snippet, {**first.extras, **panels})
        return results


def _panel(node: Any, fields: tuple[str, ...], *, attributes: bool = False) -> dict[str, Any]:
    """The text fields of an answer box or knowledge graph, cleaned; empty when absent or malformed."""
    if not isinstance(node, dict):
        return {}
    panel: dict[str, Any] = {key: clean_text(node[key]) for key in fields if isinstance(node.get(key), str)}
    attrs = node.get("attributes")
    if attributes and isinstance(attrs, dict):
        panel["attributes"] = {
            clean_text(str(key)): clean_text(value) for key, value in attrs.items() if isinstance(value, str)
        }
    return panel
