"""The DeepResearcher paper's reference numbers (arXiv 2504.03160, Tables 1–2), shown beside our runs.

They were measured on the paper's test set (``deepresearcher-test``) with live web search, so they are a
reference point, not a like-for-like comparison with runs on other question sets or on the local backend.
"""

from __future__ import annotations

__all__ = [
    "PAPER_METHODS",
    "PAPER_NOTE",
    "PAPER_RESULTS",
    "PAPER_SOURCES",
    "SOURCE_NAMES",
    "display_source",
    "order_sources",
    "paper_value",
]

PAPER_SOURCES: tuple[str, ...] = ("nq", "tq", "hotpotqa", "2wiki", "musique", "bamboogle", "popqa")
"""The paper's data sources, in its column order."""

SOURCE_NAMES: dict[str, str] = {
    "nq": "NQ",
    "tq": "TQ",
    "hotpotqa": "HotpotQA",
    "2wiki": "2Wiki",
    "musique": "MuSiQue",
    "bamboogle": "Bamboogle",
    "popqa": "PopQA",
}
"""Display names of the data sources, as the paper writes them."""

PAPER_NOTE = (
    "Paper rows: DeepResearcher (arXiv 2504.03160) Tables 1-2, on its test set with live web search; "
    "a reference point, not a like-for-like comparison."
)

# method -> source -> (F1, MBE), in percent.
# fmt: off
PAPER_RESULTS: dict[str, dict[str, tuple[float, float]]] = {
    "CoT": {
        "nq": (19.8, 32.0), "tq": (45.6, 48.2), "hotpotqa": (24.4, 27.9), "2wiki": (26.4, 27.3),
        "musique": (8.5, 7.4), "bamboogle": (22.1, 21.6), "popqa": (17.0, 15.0),
    },
    "CoT + RAG": {
        "nq": (42.0, 59.6), "tq": (68.9, 75.8), "hotpotqa": (37.1, 43.8), "2wiki": (24.4, 24.8),
        "musique": (10.0, 10.0), "bamboogle": (25.4, 27.2), "popqa": (46.9, 48.8),
    },
    "Search-o1 (web)": {
        "nq": (32.4, 55.1), "tq": (58.9, 69.5), "hotpotqa": (33.0, 42.4), "2wiki": (30.9, 37.7),
        "musique": (14.7, 19.7), "bamboogle": (46.6, 53.6), "popqa": (38.3, 43.4),
    },
    "Search-r1-base": {
        "nq": (45.4, 60.0), "tq": (71.9, 76.2), "hotpotqa": (55.9, 63.0), "2wiki": (44.6, 47.9),
        "musique": (26.7, 27.5), "bamboogle": (56.5, 57.6), "popqa": (43.2, 47.0),
    },
    "R1-Searcher": {
        "nq": (35.4, 52.3), "tq": (73.1, 79.1), "hotpotqa": (44.8, 53.1), "2wiki": (59.4, 65.8),
        "musique": (22.8, 25.6), "bamboogle": (64.8, 65.6), "popqa": (42.7, 43.4),
    },
    "DeepResearcher": {
        "nq": (39.6, 61.9), "tq": (78.4, 85.0), "hotpotqa": (52.8, 64.3), "2wiki": (59.7, 66.6),
        "musique": (27.1, 29.3), "bamboogle": (71.0, 72.8), "popqa": (48.5, 52.7),
    },
}
# fmt: on

PAPER_METHODS: tuple[str, ...] = tuple(PAPER_RESULTS)

_METRIC_SLOT = {"f1": 0, "mbe": 1}


def paper_value(method: str, source: str, metric: str) -> float | None:
    """The paper's number (percent) for ``method`` on ``source``; None where the paper reports none.

    Only ``f1`` and ``mbe`` are reported in the paper; any other metric gives None.
    """
    slot = _METRIC_SLOT.get(metric)
    row = PAPER_RESULTS.get(method, {})
    if slot is None or source not in row:
        return None
    return row[source][slot]


def display_source(source: str) -> str:
    """The display name of a data source (the paper's spelling for its seven, else the name itself)."""
    return SOURCE_NAMES.get(source, source)


def order_sources(sources: set[str] | list[str] | tuple[str, ...]) -> list[str]:
    """The paper's sources first in its order, then any other source alphabetically."""
    present = set(sources)
    return [s for s in PAPER_SOURCES if s in present] + sorted(present - set(PAPER_SOURCES))
