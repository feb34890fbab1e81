"""Reading the data files: whole-file JSON and JSON lines (blank lines skipped), always as UTF-8 bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["read_json", "read_jsonl"]


def read_json(path: Path) -> Any:
    with path.open("rb") as fh:
        return json.load(fh)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
