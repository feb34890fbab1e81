"""Adapters that plug drgym into RL trainers; each submodule imports its trainer only when it is imported."""

from __future__ import annotations

__all__: list[str] = []
