"""scripts/pip_quiet.sh: the install script's pip runs are quiet, but real warnings and every error show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_NOISY_PIP = """#!/usr/bin/env bash
echo "WARNING: Location 'file:///opt/pypi-more/simple/six/' is ignored: it is neither a file nor a directory."
echo "  setuptools banner line"
echo "WARNING: this one matters"
exit "${STATUS:-0}"
"""


def _pip_quiet(python: str, *args: str, log: Path, status: int = 0) -> subprocess.CompletedProcess[str]:
    script = '. scripts/pip_quiet.sh; pip_quiet "$@"'
    env = {"PATH": "/usr/bin:/bin", "VENV_PYTHON": python, "PIP_LOG": str(log), "STATUS": str(status)}
    return subprocess.run(["bash", "-c", script, "pip_quiet", *args], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def test_a_successful_run_shows_real_warnings_only_and_logs_everything(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(_NOISY_PIP)
    fake.chmod(0o755)
    proc = _pip_quiet(str(fake), "install", "six", log=tmp_path / "log")
    assert proc.returncode == 0
    assert proc.stderr == "WARNING: this one matters\n" and proc.stdout == ""
    assert "is ignored" in (tmp_path / "log").read_text() and "banner" in (tmp_path / "log").read_text()


def test_a_failing_run_prints_everything_and_keeps_the_status(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(_NOISY_PIP)
    fake.chmod(0o755)
    proc = _pip_quiet(str(fake), "install", "six", log=tmp_path / "log", status=3)
    assert proc.returncode == 3 and "is ignored" in proc.stderr and "banner" in proc.stderr


def test_a_real_pip_error_reaches_the_terminal(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"
    proc = _pip_quiet(sys.executable, "install", "--no-index", "--no-deps", str(missing), log=tmp_path / "log")
    assert proc.returncode != 0 and "ERROR" in proc.stderr and str(missing) in proc.stderr
