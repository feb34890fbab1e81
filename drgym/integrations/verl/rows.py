"""One question as a row of verl's dataset, and back: what the parquet writer and the agent loop agree on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drgym.data.records import QARecord
from drgym.errors import ConfigError
from drgym.reward import split_gold

__all__ = ["AGENT_NAME", "ANSWER_SPLIT", "record_from_row", "row_from_record"]

AGENT_NAME = "drgym"
"""The agent-loop name every row carries, so verl hands it to :class:`DrgymAgentLoop`."""

ANSWER_SPLIT = "<|answer_split|>"
"""How the DeepResearcher data joins gold answers in ``reward_model.ground_truth``."""


def row_from_record(record: QARecord, index: int, split: str) -> dict[str, Any]:
    """A verl row: ``prompt`` (one user message with the bare question, as the paper's data has it),
    ``data_source``, ``reward_model.ground_truth``, ``extra_info`` (the record itself) and ``agent_name``."""
    return {
        "data_source": record.source,
        "prompt": [{"role": "user", "content": record.question}],
        "ability": "deep_research",
        "reward_model": {"style": "rule", "ground_truth": ANSWER_SPLIT.join(record.answers)},
        "extra_info": {
            "index": index,
            "split": split,
            "id": record.id,
            "question": record.question,
            "answers": list(record.answers),
        },
        "agent_name": AGENT_NAME,
    }


def record_from_row(row: Mapping[str, Any]) -> QARecord:
    """The question of a verl row (a dataset item as the agent loop receives it).

    Our rows carry the record in ``extra_info``; other verl rows work too: the question is then the last user
    message of ``raw_prompt`` (or ``prompt``) and the golds are ``reward_model.ground_truth``.

    Raises:
        ConfigError: The row has no question or no gold answer (naming the row).
    """
    extra = row.get("extra_info") or {}
    index = extra.get("index", row.get("index", "?"))
    question = extra.get("question") or _last_user(row.get("raw_prompt") or row.get("prompt"))
    golds = extra.get("answers")
    if golds is None or len(golds) == 0:
        golds = (row.get("reward_model") or {}).get("ground_truth")
    answers = split_gold(_as_list(golds)) if golds is not None else []
    source = str(row.get("data_source") or "custom")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"verl row {index} ({source}) has no question: no extra_info.question, no user message")
    if not answers:
        raise ConfigError(f"verl row {index} ({source}) has no gold answer in reward_model.ground_truth")
    return QARecord(question=question.strip(), answers=answers, source=source, id=str(extra.get("id", index)))


def _last_user(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if prompt is None:
        return None
    users = [m.get("content") for m in list(prompt) if isinstance(m, Mapping) and m.get("role") == "user"]
    return users[-1] if users else None


def _as_list(value: Any) -> Any:
    """numpy arrays (how parquet lists come back through pandas) as lists; strings and lists as they are."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value
