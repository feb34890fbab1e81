"""Observations cut to fit ``max_observation_chars``, so every one is in the env's observation space.

A cut text ends with :data:`CUT_MARK` (when the limit leaves room for it), so the policy knows something is
missing. A tool response is measured *wrapped* (``<tool_response>`` tags and tag escaping included), since the
wrapped text is the observation.
"""

from __future__ import annotations

from drgym import protocol

__all__ = ["CUT_MARK", "fit_text", "fit_tool_response"]

CUT_MARK = "\n[... cut to fit the observation limit]"
"""What a cut observation ends with."""


def fit_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with a mark that says so when there is room for one."""
    if len(text) <= limit:
        return text
    if limit <= 2 * len(CUT_MARK):
        return text[:limit]
    return text[: limit - len(CUT_MARK)] + CUT_MARK


def fit_tool_response(content: str, limit: int) -> tuple[str, str]:
    """``(content kept, observation)``: the tool response, cut so that the wrapped observation has ``<= limit``.

    The wrapper (and tag escaping, which may lengthen the text) counts against the limit, so every
    observation is in the observation space however small the limit.
    """
    observation = protocol.wrap_tool_response(content)
    if len(observation) <= limit:
        return content, observation
    keep = len(content) - (len(observation) - limit) - len(CUT_MARK)
    while keep > len(CUT_MARK):  # leave some content beside the mark, else no mark at all
        kept = content[:keep] + CUT_MARK
        observation = protocol.wrap_tool_response(kept)
        if len(observation) <= limit:
            return kept, observation
        keep -= len(observation) - limit
    kept = content[: max(0, limit - len(protocol.wrap_tool_response("")))]
    return kept, protocol.wrap_tool_response(kept)[:limit]
