"""drgym: deep web research as a Gymnasium environment.

``import drgym`` registers ``drgym/WebResearch-v0`` (offline, deterministic: local BM25 by default) and
``drgym/WebResearchLive-v0`` (live search APIs; registered ``nondeterministic=True``). Importing is cheap: no
torch, no corpus loading until an env is made.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "BaseAgent",
    "ToolServices",
    "Trajectory",
    "WebResearchEnv",
    "__version__",
    "arun_episode",
    "arun_episodes",
    "run_episode",
]

if "drgym/WebResearch-v0" not in registry:
    register(id="drgym/WebResearch-v0", entry_point="drgym.env:WebResearchEnv", nondeterministic=False)
if "drgym/WebResearchLive-v0" not in registry:
    register(
        id="drgym/WebResearchLive-v0",
        entry_point="drgym.env:WebResearchEnv",
        nondeterministic=True,
        kwargs={"search": "serper", "dataset": "deepresearcher-dev"},
    )

_LAZY = {
    "WebResearchEnv": "drgym.env",
    "ToolServices": "drgym.services",
    "Agent": "drgym.agent",
    "BaseAgent": "drgym.agent",
    "Trajectory": "drgym.runner",
    "run_episode": "drgym.runner",
    "arun_episode": "drgym.runner",
    "arun_episodes": "drgym.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drgym' has no attribute {name!r}")
