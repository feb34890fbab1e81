"""The paper's reward as verl's ``compute_score``, for verl users who keep their own agent loop.

verl loads a custom reward function by file path (``reward.custom_reward_function.path``), in a process that
may not have drgym's optional parts installed, so this module imports nothing but :mod:`drgym.reward` and the
standard library. ``solution_str`` is the decoded response of a whole multi-turn rollout: the policy's turns
with the tool turns between them. Only the policy's own text is scored (tool output is cut out first), so a
web page quoting ``<answer>`` or an unbalanced tag cannot change a reward.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from drgym.reward import score_episode, split_gold

__all__ = ["compute_score", "policy_turns"]

# A tool turn as the policy's context holds it. Tool text is rendered with its tags escaped, so the first
# closing tag after an opening one ends the block; an unclosed block runs to the end of the text.
_TOOL_TURN_RE = re.compile(r"<tool_response>.*?(?:</tool_response>|\Z)", re.DOTALL)


def policy_turns(solution_str: str, *, generation_prefix: str = "") -> list[str]:
    """The policy's turns in a decoded multi-turn response, tool turns removed.

    Chat-template markers left between turns (``<|im_end|>``, ``user``, ``assistant``) hold no protocol tag, so
    they do not affect the format check. ``generation_prefix`` is text the prompt forces at the start of every
    assistant turn (``"<think>"`` under ``protocol="deepresearcher"``): the policy did not sample it, so the
    decoded response lacks it, and it is put back on each turn that does not start with it.
    """
    turns = [t for t in _TOOL_TURN_RE.split(solution_str) if t.strip()]
    if not generation_prefix:
        return turns
    cleaned = [_strip_role_markers(t) for t in turns]
    return [t if t.startswith(generation_prefix) else generation_prefix + t for t in cleaned]


def _strip_role_markers(turn: str) -> str:
    """The turn without the chat-template text that opens an assistant turn (kept or skipped as special)."""
    text = turn.lstrip()
    while True:
        for marker in ("<|im_end|>", "<|im_start|>", "assistant\n"):
            if text.startswith(marker):
                text = text[len(marker) :].lstrip()
                break
        else:
            return text


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str | Sequence[str],
    extra_info: Mapping[str, Any] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """verl's reward-function signature: the paper's reward of one rollout, with its metrics.

    Returns ``{"score": reward, "f1", "em", "format_ok"}`` (verl takes ``score`` as the reward and logs the
    rest). ``extra_info`` may set ``reward_mode`` (default ``"paper"``: −1 on a broken format, else F1) and
    ``generation_prefix`` (see :func:`policy_turns`).

    Raises:
        drgym.errors.ConfigError: There is no gold answer or the reward mode is unknown.
    """
    info = dict(extra_info or {})
    turns = policy_turns(solution_str, generation_prefix=str(info.get("generation_prefix") or ""))
    score = score_episode(turns, split_gold(ground_truth), str(info.get("reward_mode") or "paper"))
    return {"score": float(score.reward), "f1": score.f1, "em": score.em, "format_ok": float(score.format_ok)}
