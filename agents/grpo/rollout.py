"""The task of a run (questions, held-out split, search backend) and its rows as TRL's ``train_dataset``.

The episodes themselves are played by :func:`drgym.integrations.trl.make_rollout_func` (token-in/token-out:
the ids trained on are the ids sampled, ``env_mask`` 0 on every tool and template id), which the trainer calls
as its ``rollout_func``; this module only says which questions there are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from drgym.errors import ConfigError
from drgym.llm.token_turns import ChatFormat, Generator, HFGenerator, Sample, failure_reward, sample_seed

if TYPE_CHECKING:
    from drgym.data.records import QARecord
    from drgym.env import WebResearchEnv

    from .config import GRPOConfig

__all__ = [
    "ChatFormat",
    "Generator",
    "HFGenerator",
    "Sample",
    "Task",
    "build_task",
    "failure_reward",
    "make_envs",
    "sample_seed",
    "train_dataset",
]


# ------------------------------------------------------------------------------------------------ tasks


@dataclass
class Task:
    """The questions of a run, split into training and held-out ones, and how to build envs over them."""

    records: list[QARecord]
    train_indices: list[int]
    eval_indices: list[int]
    env_kwargs: dict[str, Any]
    texts: list[str] = field(default_factory=list)
    """The task's text (questions, answers, synthetic corpus passages): what a word tokenizer is trained on."""
    train_passages: list[str] = field(default_factory=list)
    """The synthetic corpus's passages about training entities only (none about a held-out question's)."""


def build_task(cfg: GRPOConfig) -> Task:
    """Load (or generate) the questions and pick the search backend of ``cfg``.

    The synthetic task generates ``num_train_questions + num_eval_questions`` questions with
    ``seed = cfg.seed`` and searches its own corpus with a local BM25 index held in memory.
    """
    env_kwargs: dict[str, Any] = {
        "max_turns": cfg.max_turns,
        "results_per_query": cfg.results_per_query,
        "reward_mode": cfg.reward_mode,
    }
    n_eval = cfg.num_eval_questions
    if cfg.dataset == "synthetic":
        from drgym.data.synthetic import make_synthetic_task
        from drgym.search.local import BM25Backend

        n_train = cfg.num_train_questions or 256
        kinds = tuple(cfg.synthetic_kinds) if cfg.synthetic_kinds is not None else None
        records, passages = make_synthetic_task(
            n_train + n_eval,
            seed=cfg.seed,
            two_hop_fraction=cfg.two_hop_fraction,
            kinds=kinds,
            entities=cfg.synthetic_entities,
            neighbours=cfg.synthetic_neighbours,
            held_out=n_eval if cfg.synthetic_neighbours else 0,
            name_pool=cfg.synthetic_name_pool,
            value_pool=cfg.synthetic_value_pool,
        )
        env_kwargs["search"] = BM25Backend(passages, corpus="synthetic", cache=False)
        texts = [t for p in passages for t in (p.title, p.text)]
        passage_texts = [(p.title, p.text) for p in passages]
    else:
        from drgym.data import load_dataset

        records = load_dataset(cfg.dataset, data_source=cfg.data_source)
        texts = []
        passage_texts = []
        n_train = min(cfg.num_train_questions or len(records) - n_eval, len(records) - n_eval)
        env_kwargs.update(search=cfg.search, corpus=cfg.corpus)
        if n_train < 1:
            raise ConfigError(
                f"dataset {cfg.dataset!r} has {len(records)} questions; num_eval_questions={n_eval} "
                "leaves none to train on"
            )
    order = np.random.default_rng([cfg.seed, 17]).permutation(len(records)).tolist()
    if cfg.dataset == "synthetic" and cfg.synthetic_neighbours:  # the held-out questions' ring: the last ones
        held = set(range(len(records) - n_eval, len(records)))
        order = sorted(held) + [i for i in order if i not in held]
    texts += [t for r in records for t in (r.question, *r.answers)]
    train_passages = _training_passages(passage_texts, [records[i].question for i in order[:n_eval]])
    return Task(
        list(records), order[n_eval : n_eval + n_train], order[:n_eval], env_kwargs, texts, train_passages
    )


def _training_passages(passages: Sequence[tuple[str, str]], held_questions: Sequence[str]) -> list[str]:
    """Passages (``(title, text)``) with nothing to do with a held-out question: not about its entity, nor
    about one linked to it through the passages' mentions (the whole held-out ring)."""
    held = {title for title, _ in passages if any(title in q for q in held_questions)}
    grown = True
    while grown:
        linked = {title for title, text in passages if title not in held and any(h in text for h in held)}
        linked |= {h2 for title, text in passages if title in held for h2, _ in passages if h2 in text}
        grown = bool(linked - held)
        held |= linked
    return [text for title, text in passages if title not in held]


def make_envs(
    task: Task, n: int, factory: Callable[..., Any] | None = None, *, services: Any = None
) -> list[WebResearchEnv]:
    """``n`` environments over the task's records, sharing one search backend (and ``services``, a
    :class:`drgym.ToolServices` the caller owns, when given)."""
    import gymnasium

    import drgym  # noqa: F401  (registers the env id)

    make = factory or (lambda **kw: gymnasium.make("drgym/WebResearch-v0", **kw).unwrapped)
    shared = {"services": services} if services is not None else {}
    return [make(dataset=task.records, **task.env_kwargs, **shared) for _ in range(n)]


def train_dataset(task: Task, indices: Sequence[int] | None = None, *, system_prompt: str | None = None) -> Any:
    """The task's training questions as TRL rows (``prompt``, ``question``, ``answers``, ``id``).

    The rollout_func path poses each row's question in the env, with the env's (or the run's) system prompt, and
    reads the gold answers from the env's own record: the prompt there only names the question. TRL's
    environment_factory path renders the prompt itself: pass ``system_prompt`` to open each prompt with it, as
    the env's first two messages are (system prompt, then the question).
    """
    from datasets import Dataset

    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    rows = [
        {
            "prompt": [*system, {"role": "user", "content": task.records[i].question}],
            "question": task.records[i].question,
            "answers": list(task.records[i].answers),
            "id": str(task.records[i].id),
        }
        for i in (task.train_indices if indices is None else indices)
    ]
    return Dataset.from_list(rows)
