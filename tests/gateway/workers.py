"""Client work run in other processes (multiprocessing spawn, Ray tasks): importable, top-level functions."""

from __future__ import annotations

import asyncio
from typing import Any


def search_many(url: str, queries: list[str], token: str | None = None) -> list[tuple[str, str]]:
    """Search every query at once through the gateway; ``(query, "ok" | error class name)`` for each."""
    from drgym.gateway.client import GatewayBackend

    async def go() -> list[tuple[str, str]]:
        client = GatewayBackend(url, token=token)
        try:
            outcomes = await asyncio.gather(
                *(client.episode_view().search(q) for q in queries), return_exceptions=True
            )
        finally:
            await client.aclose()
        return [(q, "ok" if isinstance(o, list) else type(o).__name__) for q, o in zip(queries, outcomes)]

    return asyncio.run(go())


def play_episodes(url: str, episodes: int, seed: int) -> list[dict[str, Any]]:
    """Scripted-agent episodes of the demo set through the gateway; a summary of each trajectory."""
    import gymnasium as gym

    import drgym
    from drgym.agents.scripted import ScriptedAgent

    trajectories = asyncio.run(
        drgym.arun_episodes(
            lambda: gym.make("drgym/WebResearch-v0", dataset="demo", search="gateway:" + url),
            ScriptedAgent, episodes=episodes, seed=seed, concurrency=3,
        )
    )
    return [
        {
            "error": t.error,
            "done": t.terminated or t.truncated,
            "search_calls": t.search_calls,
            "observations": [turn.observation for turn in t.turns],
        }
        for t in trajectories
    ]
