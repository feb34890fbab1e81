"""Smoke runs of the PPO example and benchmark with a tiny budget: they train, evaluate and print their tables."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("random ", "random (valid slots)", "search + top span", "PPO ")


def test_benchmark_quick_prints_the_comparison_and_throughput(capsys):
    from drgym.benchmarks.perf import sb3_ppo

    sb3_ppo.main(["--quick", "--timesteps", "256"])
    out = capsys.readouterr().out
    assert "demo: 16 train / 6 held-out questions; PPO 256 steps" in out
    rows = {
        line.split("  ")[0].strip(): line.split()[-4:]
        for line in out.splitlines()
        if line.startswith(POLICIES)
    }
    assert set(rows) == {"random", "random (valid slots)", "search + top span", "PPO"}
    for reward, f1, answered, turns in rows.values():
        assert -1.0 <= float(reward) <= 1.0 and 0.0 <= float(f1) <= 1.0 and answered.endswith("%")
        assert 1.0 <= float(turns) <= sb3_ppo.MAX_TURNS
    steps_line = next(line for line in out.splitlines() if line.startswith("env steps/s through the wrapper"))
    assert float(steps_line.split()[-1]) > 0


def test_example_trains_and_compares_on_held_out_questions(capsys, monkeypatch):
    argv = ["sb3_ppo.py", "--timesteps", "256", "--n-envs", "2", "--n-steps", "64", "--hidden", "16"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "examples" / "sb3_ppo.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "demo: 16 train / 6 test questions" in out and "trained PPO for 256 steps" in out
    assert sum(line.startswith(POLICIES) for line in out.splitlines()) == 4
