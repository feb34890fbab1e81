"""The prompt-engineering baseline: an untrained chat model following the research protocol by prompting.

``PromptAgent(llm="openai:http://localhost:8000/v1", model="NAME")`` plays ``WebResearch-v0`` with any chat
model; :func:`repair_turn` turns imperfect replies into protocol turns.
"""

from .agent import STOP, PromptAgent, TurnUsage, call_llm
from .llm import close_client, resolve_llm, shared_client
from .repair import (
    Repair,
    final_answer_turn,
    render_answer,
    render_tool_call,
    repair_turn,
)

__all__ = [
    "STOP",
    "PromptAgent",
    "Repair",
    "TurnUsage",
    "call_llm",
    "close_client",
    "final_answer_turn",
    "render_answer",
    "render_tool_call",
    "repair_turn",
    "resolve_llm",
    "shared_client",
]
