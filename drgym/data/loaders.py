"""Parsers that turn each registered question file into ``QARecord``s.

Every record gets ``source`` in the DeepResearcher parquet's data-source names (``nq``, ``tq``, ``hotpotqa``,
``2wiki``, ``musique``, ``bamboogle``, ``popqa``; lower case) and an id ``<dataset>:<key>``, where the key is
the file's own question id when it has one and the row number otherwise (the files are pinned by sha256, so
row numbers never move).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from drgym.data._io import read_json as _json
from drgym.data._io import read_jsonl as _jsonl
from drgym.data.records import QARecord, describe_record, record_problem
from drgym.errors import DataError

__all__ = ["ANSWER_SPLIT", "SOURCE_ALIASES", "normalise_source", "parse_dataset", "split_answers"]

ANSWER_SPLIT = "<|answer_split|>"
"""Separator of gold answers in the DeepResearcher parquet's ``reward_model.ground_truth``."""

SOURCE_ALIASES = {
    "triviaqa": "tq",
    "trivia": "tq",
    "natural_questions": "nq",
    "nq_open": "nq",
    "nq-open": "nq",
    "hotpot": "hotpotqa",
    "2wikimultihopqa": "2wiki",
    "popqa_longtail": "popqa",
}
"""Other common names of the data sources, mapped to the names records use."""


def normalise_source(name: str) -> str:
    """Lower-case a data-source name and map known aliases (``Bamboogle`` → ``bamboogle``, ``triviaqa`` → ``tq``)."""
    key = name.strip().lower()
    return SOURCE_ALIASES.get(key, key)


def split_answers(value: Any) -> list[str]:
    """Gold answers from the shapes seen in the wild: a joined string, a list, or a dict with a list inside."""
    if isinstance(value, str):
        parts: Iterable[Any] = value.split(ANSWER_SPLIT)
    elif isinstance(value, dict):
        for key in ("target", "answers", "answer", "ground_truth"):
            if key in value:
                return split_answers(value[key])
        raise ValueError(f"no answers in {sorted(value)}")
    elif isinstance(value, (list, tuple)):
        parts = [part for item in value for part in split_answers(item)]
    elif value is None:
        parts = []
    else:
        parts = [str(value)]
    answers: list[str] = []
    for part in parts:
        text = str(part).strip()
        if text and text not in answers:
            answers.append(text)
    return answers


def _record(name: str, key: object, question: str, answers: Any, source: str, **metadata: Any) -> QARecord:
    golds = split_answers(answers)
    problem = record_problem(question, golds)
    if problem is not None:
        raise ValueError(f"{describe_record(repr(key), question, answers)}: {problem}")
    return QARecord(question.strip(), golds, normalise_source(source), f"{name}:{key}", metadata)




def _user_text(prompt: Any) -> str:
    """The question of a verl row: the content of its last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError("prompt has no user message")
    return users[-1]


def _verl_rows(name: str, rows: Iterable[dict[str, Any]], source: str | None = None) -> list[QARecord]:
    records = []
    for row in rows:
        extra = row.get("extra_info") or {}
        records.append(
            _record(
                name,
                extra["index"],
                _user_text(row["prompt"]),
                row["reward_model"]["ground_truth"],
                source or row["data_source"],
                data_source=row["data_source"],
                index=extra["index"],
                split=extra.get("split", ""),
            )
        )
    return records


def _deepresearcher(name: str, path: Path) -> list[QARecord]:
    import pyarrow.parquet as pq

    columns = ["data_source", "prompt", "reward_model", "extra_info"]
    return _verl_rows(name, pq.read_table(path, columns=columns).to_pylist())


def _bamboogle_searchr1(name: str, path: Path) -> list[QARecord]:
    return _verl_rows(name, _jsonl(path), source="bamboogle")


def _plain(source: str) -> Callable[[str, Path], list[QARecord]]:
    """Reader of the ``[{question, answer}]`` files (answer a string or a list)."""

    def read(name: str, path: Path) -> list[QARecord]:
        return [_record(name, i, row["question"], row["answer"], source) for i, row in enumerate(_json(path))]

    return read


def _triviaqa(name: str, path: Path) -> list[QARecord]:
    records = []
    for i, row in enumerate(_jsonl(path)):
        question = row["context"].strip()
        question = question.removeprefix("Question:").removesuffix("Answer:").strip()
        records.append(_record(name, i, question, [row["answer"], *row.get("aliases", [])], "tq"))
    return records


def _hotpot_ircot(name: str, path: Path) -> list[QARecord]:
    records = []
    for row in _jsonl(path):
        answers = [span for obj in row["answers_objects"] for span in obj.get("spans", [])]
        supporting = tuple(dict.fromkeys(c["title"] for c in row["contexts"] if c.get("is_supporting")))
        records.append(
            _record(
                name,
                row["question_id"],
                row["question_text"],
                answers,
                "hotpotqa",
                supporting_titles=supporting,
            )
        )
    return records


def _musique(name: str, path: Path) -> list[QARecord]:
    records = []
    for row in _json(path):
        supporting = tuple(dict.fromkeys(p["title"] for p in row["paragraphs"] if p.get("is_supporting")))
        records.append(
            _record(
                name,
                row["id"],
                row["question"],
                [row["answer"], *row.get("answer_aliases", [])],
                "musique",
                hops=len(row.get("question_decomposition", [])),
                supporting_titles=supporting,
            )
        )
    return records


def _popqa(name: str, path: Path) -> list[QARecord]:
    records = []
    for row in _json(path):
        answers = row["possible_answers"]
        if isinstance(answers, str):  # a JSON list stored as a string
            answers = json.loads(answers)
        supporting = tuple(
            dict.fromkeys(p["title"] for p in row.get("paragraphs", []) if p.get("is_supporting"))
        )
        records.append(
            _record(
                name,
                row["id"],
                row["question"],
                answers,
                "popqa",
                subject=row.get("subj", ""),
                relation=row.get("prop", ""),
                object=row.get("obj", ""),
                subject_popularity=row.get("s_pop"),
                supporting_titles=supporting,
            )
        )
    return records


def _hotpot_train(name: str, path: Path) -> list[QARecord]:
    records = []
    for row in _json(path):
        supporting = tuple(dict.fromkeys(title for title, _ in row.get("supporting_facts", [])))
        records.append(
            _record(
                name,
                row["_id"],
                row["question"],
                row["answer"],
                "hotpotqa",
                type=row.get("type", ""),
                level=row.get("level", ""),
                supporting_titles=supporting,
            )
        )
    return records


_PARSERS: dict[str, Callable[[str, Path], list[QARecord]]] = {
    "deepresearcher-test": _deepresearcher,
    "deepresearcher-dev": _deepresearcher,
    "bamboogle": _plain("bamboogle"),
    "bamboogle-searchr1": _bamboogle_searchr1,
    "nq-open": _plain("nq"),
    "triviaqa-3000": _triviaqa,
    "hotpotqa-dev": _plain("hotpotqa"),
    "2wiki-dev": _plain("2wiki"),
    "musique-dev": _plain("musique"),
    "hotpotqa-dev500": _hotpot_ircot,
    "musique-dev100": _musique,
    "popqa-1000": _popqa,
    "hotpotqa-train100": _hotpot_train,
    "musique-train100": _musique,
}


def parse_dataset(name: str, paths: list[Path]) -> list[QARecord]:
    """Parse a registered dataset's files (already fetched and verified) into records."""
    parser = _PARSERS.get(name)
    if parser is None:
        raise DataError(f"no question reader for dataset {name!r}")
    try:
        return [record for path in paths for record in parser(name, path)]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        where = ", ".join(str(p) for p in paths)
        raise DataError(f"cannot read dataset {name!r} from {where}: {type(exc).__name__}: {exc}") from exc
