"""The GRPO speed benchmarks run end to end at their smallest size (the figures are the scripts', not asserted)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")


@pytest.mark.slow
def test_trl_grpo_benchmark_quick_prints_both_rows(capsys):
    from drgym.benchmarks.perf import trl_grpo

    trl_grpo.main(["--quick", "--part", "1"])
    out = capsys.readouterr().out
    assert "| bundled |" in out and "| trl-1turn |" in out


@pytest.mark.slow
def test_grpo_benchmark_quick_prints_throughput_and_warmstart_cost(capsys):
    from drgym.benchmarks.perf import grpo

    grpo.main(["--quick", "--no-curve"])
    out = capsys.readouterr().out
    assert "| rollout |" in out and "| update |" in out and "| policy positions only |" in out
