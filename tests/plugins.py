"""Install entry points for a test the way a real package does: a ``*.dist-info`` folder on ``sys.path``."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["register_entry_points"]


def register_entry_points(
    monkeypatch: pytest.MonkeyPatch, root: Path, group: str, entries: dict[str, str], dist: str = "drgym-test-plugins"
) -> None:
    """Make ``entries`` (name -> "module:attr") visible in entry-point ``group`` until the test ends."""
    info = root / f"{dist.replace('-', '_')}-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    lines = [f"[{group}]", *(f"{name} = {value}" for name, value in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(root))


def echo_command(argv: list[str]) -> int:
    """A ``drgym.commands`` entry point for the CLI tests: prints its arguments, exits with their count."""
    print("echo:", " ".join(argv))
    return len(argv)
