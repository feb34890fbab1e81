"""``benchmarks.perf.all``: discovery, --quick/--full, and a failing benchmark that does not stop the rest."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from drgym.benchmarks.perf.all import discover, main, run_all

_MODULES = {
    "__init__.py": '"""Fake benchmarks."""\n',
    "fast.py": "def main(argv=None):\n    print('fast ran with', argv)\n",
    "broken.py": "def main(argv=None):\n    raise RuntimeError('disk full')\n",
    "exits.py": "import sys\n\ndef main(argv=None):\n    sys.exit(3)\n",
    "no_args.py": "import sys\n\ndef main():\n    print('no_args saw', sys.argv[1:])\n",
    "clean_exit.py": "import sys\n\ndef main(argv=None):\n    print('done'); sys.exit(0)\n",
    "_helpers.py": "raise ImportError('a private helper is never run')\n",
    "all.py": "raise ImportError('the runner itself is never run')\n",
}


@pytest.fixture
def fake_perf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package of small benchmark modules on sys.path; returns its name."""
    name = f"fakeperf_{uuid.uuid4().hex[:8]}"
    package = tmp_path / name
    package.mkdir()
    for filename, text in _MODULES.items():
        (package / filename).write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_discovers_public_modules_only(fake_perf: str) -> None:
    assert discover(fake_perf) == ["broken", "clean_exit", "exits", "fast", "no_args"]


def test_runs_each_quick_and_reports_failures_without_stopping(fake_perf: str, capsys) -> None:
    outcomes = {o.name: o for o in run_all(package=fake_perf)}
    out = capsys.readouterr().out
    assert "fast ran with ['--quick']" in out
    assert "no_args saw ['--quick']" in out and outcomes["no_args"].error is None
    assert outcomes["fast"].error is None and outcomes["clean_exit"].error is None
    assert outcomes["broken"].error.startswith("RuntimeError: disk full")
    assert outcomes["exits"].error == "exited with status 3"
    assert "FAILED broken" in out and "== fast (quick) ==" in out


def test_full_mode_passes_no_quick_flag(fake_perf: str, capsys) -> None:
    run_all(["fast"], full=True, package=fake_perf)
    assert "fast ran with []" in capsys.readouterr().out


def test_unknown_names_list_the_valid_ones(fake_perf: str) -> None:
    with pytest.raises(
        ValueError, match="unknown benchmark\\(s\\) nope; valid: broken, clean_exit, exits, fast, no_args"
    ):
        run_all(["nope"], package=fake_perf)


def test_real_package_is_discovered_and_main_rejects_unknown_names(capsys) -> None:
    names = discover()
    assert "all" not in names and "env_overhead" in names
    with pytest.raises(SystemExit) as exc:
        main(["--only", "nope"])
    assert exc.value.code == 2
    assert "unknown benchmark(s) nope; valid:" in capsys.readouterr().err
