"""The bundled trainer under ``accelerate launch`` with two CPU processes (gloo): the multi-GPU path (DDP), run
for real."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("accelerate")

from drgym.agents.grpo.checkpoint import load_model
from drgym.agents.grpo.metrics import read_metrics
from tests.grpo.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_play_episodes_update_together_and_write_one_checkpoint(tmp_path):
    # entropy_coef: the untrained tiny model's episodes all score -1 (no advantage), the entropy bonus still
    # gives every step a gradient, so the weights must move
    cfg = tiny_config(tmp_path, entropy_coef=0.05, learning_rate=1e-2, per_device_train_batch_size=2,
                      max_turn_tokens=8, max_completion_length=64, num_train_questions=8)
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        # `--cpu --num_processes 2` starts ONE process unless MPI is set up (accelerate's simple launcher);
        # `--multi_gpu` is torchrun underneath, and use_cpu: true makes it gloo on the CPU
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "agents.grpo.train", "--config", str(path), "--max_steps", "2",
    ]
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{\n"):])  # printed once, by the main process
    out = tmp_path / "run"
    assert summary["steps"] == 2 and summary["checkpoint"] == str(out / "checkpoint-2")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:  # both ranks played their share: 2 per process per step, gathered
        assert row["charts/processes_with_episodes"] == 2.0 and row["rollout/episodes"] == 4.0
        assert row["trl/grad_norm"] > 0
    start, _ = load_model(out / "initial")
    final, _ = load_model(out)
    changed = [n for (n, a), b in zip(start.named_parameters(), final.parameters()) if not torch.equal(a, b)]
    assert changed
