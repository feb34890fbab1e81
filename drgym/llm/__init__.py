"""Chat-model backends: an OpenAI-compatible HTTP client, local transformers and vLLM clients, a small
OpenAI-compatible server for local models, and a tiny random model for tests and demos.

Importing this package is cheap: torch, transformers and vLLM are imported only when a client that needs them
is built (the names below resolve lazily).
"""

from __future__ import annotations

import importlib
from typing import Any

from drgym.errors import LLMError
from drgym.llm.base import ChatClient, Completion, ContextOverflowError, Message
from drgym.llm.factory import SPECS, make_client

__all__ = [
    "CHATML_TEMPLATE",
    "SPECS",
    "ChatClient",
    "Completion",
    "ContextOverflowError",
    "LLMError",
    "Message",
    "OpenAIChatClient",
    "SamplingOptions",
    "TransformersChatClient",
    "VLLMChatClient",
    "create_app",
    "make_client",
    "tiny_causal_lm",
    "tiny_chat_client",
    "truncate_at_stop",
]

_LAZY = {
    "OpenAIChatClient": "drgym.llm.openai",
    "TransformersChatClient": "drgym.llm.local",
    "SamplingOptions": "drgym.llm.local",
    "CHATML_TEMPLATE": "drgym.llm.local",
    "truncate_at_stop": "drgym.llm.local",
    "VLLMChatClient": "drgym.llm.vllm",
    "create_app": "drgym.llm.server",
    "tiny_causal_lm": "drgym.llm.tiny",
    "tiny_chat_client": "drgym.llm.tiny",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drgym.llm' has no attribute {name!r}")
