"""The `drgym` command, run as a user would run it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def drgym(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "drgym.cli", *args], check=False, capture_output=True, text=True, timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_episode_prints_the_trajectory_as_json():
    out = json.loads(drgym("episode", "--dataset", "demo", "--index", "0", "--agent", "scripted").stdout)
    assert out["agent"] == "scripted" and out["terminated"]
    assert [t["tool"] for t in out["turns"][:2]] == ["web_search", "browse_webpage"]
    assert out["answers"] and 0.0 <= out["f1"] <= 1.0 and out["reward"] == out["f1"]


@pytest.mark.usefixtures("data_mirror")
def test_episode_on_real_data_via_mirror():
    out = json.loads(drgym("episode", "--dataset", "hotpotqa-dev500", "--index", "3", "--compact").stdout)
    assert out["record_id"].startswith("hotpotqa-dev500:") and out["search_calls"] == 1


def test_search_prints_results():
    results = json.loads(drgym("search", "lighthouse", "--backend", "local", "--corpus", "demo", "-k", "3").stdout)
    assert 1 <= len(results) <= 3
    assert all(r["url"].startswith("https://local.drgym/demo/") for r in results)


def test_data_list_names_datasets_and_corpora():
    out = drgym("data", "list").stdout
    for name in ("deepresearcher-test", "hotpotqa-dev500", "wiki-local", "demo"):
        assert name in out


def test_unknown_names_are_clear_errors():
    proc = drgym("episode", "--dataset", "hotpotqa-dev5000", check=False)
    assert proc.returncode == 2 and "hotpotqa-dev500" in proc.stderr
    proc = drgym("episode", "--agent", "scriptd", check=False)
    assert proc.returncode == 2 and "scripted" in proc.stderr
    proc = drgym("search", "x", "--backend", "googel", check=False)
    assert proc.returncode == 2 and "valid backends" in proc.stderr


def test_agents_lists_every_agent():
    out = drgym("agents").stdout.split()
    assert {"scripted", "prompt", "rag", "grpo"} <= set(out)
