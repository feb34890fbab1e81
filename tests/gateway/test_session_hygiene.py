"""The README's ``arun_episodes`` example exits cleanly: no "Unclosed client session/connector" (issue 12, item 10).

Each variant runs in a fresh interpreter, since the warnings come at the end of a program's event loop.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return next(b for b in blocks if "drgym.arun_episodes(" in b)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize("search", [None, 'search="miniweb", corpus="demo"'], ids=["as-written", "miniweb"])
def test_the_readme_arun_episodes_example_exits_cleanly(search: str | None, data_mirror) -> None:
    code = _readme_example()
    if search is not None:  # the same example over the live path: HTTP sessions and a loopback site
        code = code.replace('dataset="demo")', f'dataset="demo", {search})')
        assert search in code
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) >= 0.0
    assert "Unclosed" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip() == ""
