"""The shipped demo world: a small fictional corpus and questions that need one or two searches.

It lets the environment, the local search backend and the tests run with no download at all. The prose is
original; none of it is taken from Wikipedia.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from drgym.data.corpus import dedup_passages
from drgym.data.records import Passage, QARecord
from drgym.errors import DataError

__all__ = ["DEMO_SOURCE", "demo_files", "demo_passages", "demo_records"]

DEMO_SOURCE = "demo"
_FILES = ("corpus.jsonl", "questions.jsonl")


def demo_files() -> list[Path]:
    """Paths of the shipped demo files (the package is installed as plain files, never zipped)."""
    root = resources.files("drgym.data").joinpath("demo")
    return [Path(str(root.joinpath(name))) for name in _FILES]


def _rows(name: str) -> list[dict[str, Any]]:
    path = resources.files("drgym.data").joinpath("demo", name)
    try:
        text = path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the shipped demo file {name}: {exc}") from exc


def demo_passages() -> list[Passage]:
    """The demo corpus, with the same hash ids as every other corpus."""
    try:
        return dedup_passages((row["title"], row["text"], DEMO_SOURCE) for row in _rows("corpus.jsonl"))
    except KeyError as exc:
        raise DataError(f"demo corpus row without {exc}") from exc


def demo_records() -> list[QARecord]:
    """The demo questions; metadata holds ``hops`` and the ``supporting`` passage titles."""
    records = []
    for row in _rows("questions.jsonl"):
        try:
            records.append(
                QARecord(
                    question=row["question"],
                    answers=list(row["answers"]),
                    source=DEMO_SOURCE,
                    id=f"demo:{row['id']}",
                    metadata={"hops": int(row["hops"]), "supporting_titles": tuple(row["supporting"])},
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed demo question {row!r}: {exc}") from exc
    return records
