"""Fixtures of the data tests: every test gets its own empty drgym home."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def drgym_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``DRGYM_HOME``, so that one test's cache never satisfies another's download."""
    home = tmp_path / "drgym-home"
    monkeypatch.setenv("DRGYM_HOME", str(home))
    return home
