"""GRPO training of a research policy inside ``drgym/WebResearch-v0`` (DeepResearcher's recipe), and the
trained policy as an agent.

Train: ``python -m agents.grpo.train --config agents/grpo/configs/tiny-cpu.yaml``. Play:
``drgym episode --agent grpo --checkpoint runs/grpo-tiny-cpu``. Importing this package imports no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GRPOAgent", "GRPOConfig", "TrainingError", "train"]

_LAZY = {
    "GRPOAgent": ".agent",
    "GRPOConfig": ".config",
    "TrainingError": ".train",
    "train": ".train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
