"""`drgym` subcommands for the search/page cache: stats, export, import."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add this module's subcommands to ``sub``; return ``{command: handler}`` (a handler returns the exit code)."""
    return {}
