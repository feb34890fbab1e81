"""GRPO training of a research policy inside ``drgym/WebResearch-v0`` (DeepResearcher's recipe), and the
trained policy as an agent.

Train: ``python -m agents.grpo.train --config agents/grpo/configs/tiny-cpu.yaml``. Play:
``drgym episode --agent grpo --checkpoint runs/grpo-tiny-cpu``. Importing this package imports no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GRPOAgent", "GRPOConfig", "TrainingError", "train"]

_LAZY = {
    "GRPOAgent": "agents.grpo.agent",
    "GRPOConfig": "agents.grpo.config",
    "TrainingError": "agents.grpo.train",
    "train": "agents.grpo.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agents.grpo' has no attribute {name!r}")
