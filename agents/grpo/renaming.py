"""Entity renaming for the warm-start: each demonstration is seen with its names and numbers redrawn at random.

On a small task the warm-start's cheapest way down is to memorise: the training towns come back every epoch,
so "the population of Musol is 4512" is learnt as a fact, and copying it out of the search result, the one
skill that carries over to towns never seen, is never needed. Renaming removes that way. Every time a
demonstration is drawn, each of its rare words (names, numbers: the entity tokens) is replaced by a random
entity token of the same kind, the same replacement wherever the word occurs in the episode (question,
query, results, thought, answer), so the episode stays consistent and the teacher's behaviour stays what it
was: it is only predictable by copying.

Entity tokens are the words of the training passages that are not protocol words and occur in under
``max_document_share`` of them (template words such as ``population`` or ``between`` occur in most). This
works on ids, so it needs a tokenizer with one id per word (the tiny model's word tokenizer). Replacements
are drawn from the same training entity words, at random, so they tell the model nothing about any answer.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["EntityRenamer"]

_WORD = re.compile(r"\w+")


class EntityRenamer:
    """Consistent random renaming of the entity tokens of one token sequence at a time."""

    def __init__(self, entity_ids: Iterable[int], is_number: Sequence[bool] | dict[int, bool], seed: int) -> None:
        ids = sorted(set(entity_ids))
        self._numbers = [i for i in ids if is_number[i]]
        self._names = [i for i in ids if not is_number[i]]
        self._entities = set(ids)
        self._number_ids = set(self._numbers)
        self._rng = random.Random(f"rename-{seed}")

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        passages: Sequence[str],
        *,
        reserved: Iterable[str] = (),
        max_document_share: float = 0.02,
        seed: int = 0,
    ) -> EntityRenamer:
        """The entity tokens of ``passages`` (the training corpus), under ``tokenizer``.

        Args:
            tokenizer: A word-level tokenizer (one id per word).
            passages: The training corpus's passages: where template words are told from entity words.
            reserved: Texts whose words are never renamed (the protocol's own text).
            max_document_share: A word in at least this share of the passages is a template word.
            seed: Seed of the replacements.
        """
        counts: Counter[int] = Counter()
        for text in passages:
            counts.update(set(tokenizer(text)["input_ids"]))
        keep = {i for text in reserved for i in tokenizer(text)["input_ids"]}
        limit = max_document_share * max(1, len(passages))
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids)
        entity, is_number = [], {}
        for i, word in enumerate(vocab):
            if not counts[i] or i in special or i in keep or counts[i] >= limit or not _WORD.fullmatch(word):
                continue
            entity.append(i)
            is_number[i] = word.isdigit()
        return cls(entity, is_number, seed)

    @property
    def size(self) -> tuple[int, int]:
        """How many ``(name, number)`` tokens there are to draw from."""
        return len(self._names), len(self._numbers)

    def __call__(self, ids: Sequence[int]) -> list[int]:
        """``ids`` with every entity token replaced, consistently, by a random entity token of its kind."""
        present = sorted({i for i in ids if i in self._entities})
        numbers = [i for i in present if i in self._number_ids]
        names = [i for i in present if i not in self._number_ids]
        mapping = dict(zip(numbers, self._rng.sample(self._numbers, min(len(numbers), len(self._numbers)))))
        mapping.update(zip(names, self._rng.sample(self._names, min(len(names), len(self._names)))))
        return [mapping.get(i, i) for i in ids]
