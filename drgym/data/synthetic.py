"""A synthetic research task: invented facts written into a generated corpus, and questions about them.

Every fact is made up (towns, people, founders, years, rivers), so no model can answer from memory: the
answer has to be found with the search tool and copied from the result. A one-hop question needs one search;
a two-hop question ("Who founded the town where X was born?") needs a search for the bridge entity first. The
task is seeded and fully deterministic, needs no download, and is small enough for a tiny model to train on a
CPU, which makes it the training task of the CPU demo and a debugging task for any policy.

Example::

    records, passages = make_synthetic_task(64, seed=0, two_hop_fraction=0.25)
    env = gymnasium.make("drgym/WebResearch-v0", dataset=records,
                         search=BM25Backend(passages, corpus="synthetic", cache=False))
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from drgym.data.records import Passage, QARecord
from drgym.errors import ConfigError

__all__ = ["SYNTHETIC_SOURCE", "SyntheticTask", "make_synthetic_task"]

SYNTHETIC_SOURCE = "synthetic"

_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
    "tr",
)
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "th", "nd")


class SyntheticTask(NamedTuple):
    """The generated questions and the corpus that answers them (unpacks as ``records, passages``)."""

    records: list[QARecord]
    passages: list[Passage]


@dataclass(frozen=True)
class _Town:
    id: str
    name: str
    founder: str
    year: int
    river: str
    population: int


@dataclass(frozen=True)
class _Person:
    id: str
    name: str
    birthplace: _Town
    year: int
    trade: str


_TRADES = (
    "weaver",
    "potter",
    "cartographer",
    "glassblower",
    "astronomer",
    "shipwright",
    "beekeeper",
    "clockmaker",
)


class _Names:
    """Pronounceable invented names, never repeated within one task."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        for _ in range(10_000):
            n = self._rng.randint(*syllables)
            parts = [self._rng.choice(_ONSETS) + self._rng.choice(_VOWELS) for _ in range(n)]
            word = ("".join(parts) + self._rng.choice(_CODAS)).capitalize()
            if word not in self._used:
                self._used.add(word)
                return word
        raise ConfigError("ran out of distinct synthetic names; ask for fewer questions")

    def person(self) -> str:
        return f"{self.word((1, 2))} {self.word((2, 2))}"


def _town_text(t: _Town) -> str:
    return (
        f"{t.name} is a town on the {t.river} river. {t.name} was founded by {t.founder} in {t.year}. "
        f"The population of {t.name} is {t.population}."
    )


def _person_text(p: _Person) -> str:
    return f"{p.name} was a {p.trade}. {p.name} was born in {p.birthplace.name} in {p.year}."


# One-hop questions: (kind, question template, answer getter). Each answer sits in the entity's own passage.
_TOWN_QUESTIONS: tuple[tuple[str, str, Callable[[_Town], str]], ...] = (
    ("founder", "Who founded {name}?", lambda t: t.founder),
    ("founding_year", "In which year was {name} founded?", lambda t: str(t.year)),
    ("river", "On which river is {name}?", lambda t: t.river),
    ("population", "What is the population of {name}?", lambda t: str(t.population)),
)
_PERSON_QUESTIONS: tuple[tuple[str, str, Callable[[_Person], str]], ...] = (
    ("birthplace", "Where was {name} born?", lambda p: p.birthplace.name),
    ("birth_year", "In which year was {name} born?", lambda p: str(p.year)),
    ("trade", "What was the trade of {name}?", lambda p: p.trade),
)


def make_synthetic_task(
    num_questions: int = 64,
    *,
    seed: int = 0,
    two_hop_fraction: float = 0.0,
    kinds: tuple[str, ...] | None = None,
    extra_towns: int = 8,
    entities: int | None = None,
    neighbours: bool = False,
    held_out: int = 0,
    name_pool: int | None = None,
    value_pool: int | None = None,
) -> SyntheticTask:
    """Generate ``num_questions`` questions and a corpus of passages holding their answers.

    The corpus has one passage per town (founder, founding year, river, population) and one per person (trade,
    birthplace, birth year); every generated entity also appears as a distractor for the others, because all
    passages share the same sentence patterns. Passage URLs under the local backend are
    ``https://local.drgym/<corpus>/<id>`` with ids ``town-0003`` / ``person-0001``.

    Args:
        num_questions: Number of questions (>= 1).
        seed: Seed of everything generated; equal seeds give equal tasks, in any process.
        two_hop_fraction: Fraction of questions that need two searches (the founder of a person's birthplace).
        kinds: One-hop question kinds to draw from (default all): ``founder``, ``founding_year``, ``river``,
            ``population``, ``birthplace``, ``birth_year``, ``trade``.
        extra_towns: Towns beyond those the questions need, as distractors.
        entities: One-hop only: ask about a fixed pool of this many towns and people (several questions each,
            every one a distinct entity and kind) instead of a fresh entity per question. A split of the
            questions then shares names between its parts (a held-out question asks another fact of an entity
            seen in training), which a tiny model needs to copy names at all; null (default): one entity per
            question.
        neighbours: Town questions only, a new town per question: the towns lie on a ring and each town's
            passage names its two neighbours (``"X lies between Y and Z."``) before its facts, so a search for
            a town returns its own passage first and then its neighbours' passages, each holding a value of the
            same kind. Every search result then offers a candidate answer, and only one is right: a reader
            that copies a value from the wrong result scores 0 (see ``ScriptedAgent(wrong_result_rate=...)``).
        held_out: Neighbours only: the last ``held_out`` questions ask about towns of a ring of their own, so no
            search for a question before them returns a passage about them (nothing of a held-out answer is
            ever shown while training, not even in a tool response). With ``name_pool`` the rings share
            words, so a training search can still return a held-out town's passage as a partial match.
        name_pool: Neighbours only: each town's name is two words, the first from a pool of ``name_pool``
            words and the second from another pool of as many, every pair used once (``name_pool ** 2`` must
            cover the towns). Every word then recurs across towns, and a held-out town is a new pair of words
            seen in training: what a tiny model trained from scratch can copy (it does not learn, in minutes
            on a CPU, to copy a word it has seen once). Partial matches (a town sharing one word) become
            distractors in the search results. ``None`` (default): one invented word per town.
        value_pool: Neighbours only: populations are drawn from this many distinct values (each recurring
            across towns, so no answer is a word seen once); ``None`` (default): any value in 200-99,999.

    Returns:
        ``SyntheticTask(records, passages)``. Each record's metadata holds ``hops``, ``kind``,
        ``support`` (the ids of the passages that hold the answer, in the order they must be found) and
        ``queries`` (a search query per hop that finds them).

    Raises:
        ConfigError: A bad argument (the message names it).
    """
    _check_args(num_questions, two_hop_fraction, kinds, extra_towns)
    rng = random.Random(f"drgym-synthetic-{seed}")
    names = _Names(rng)
    wanted = set(kinds) if kinds is not None else None
    town_kinds = [q for q in _TOWN_QUESTIONS if wanted is None or q[0] in wanted]
    person_kinds = [q for q in _PERSON_QUESTIONS if wanted is None or q[0] in wanted]
    if neighbours:
        _check_neighbours(two_hop_fraction, entities, kinds, held_out, num_questions)
        towns = sum(max(3, a + e) for a, e in _ring_sizes(num_questions, extra_towns, held_out))
        pools = _WordPools.build(rng, names, name_pool, value_pool, towns)
        return _ring_task(rng, names, seed, num_questions, town_kinds, extra_towns, held_out, pools)
    if held_out:
        raise ConfigError("held_out (a ring of its own) applies to neighbours only; set neighbours=True or 0")
    if name_pool is not None or value_pool is not None:
        raise ConfigError("name_pool and value_pool apply to neighbours only; set neighbours=True or leave them None")
    if entities is not None:
        _check_pool(num_questions, two_hop_fraction, entities, len(town_kinds), len(person_kinds))
        return _pooled_task(rng, names, seed, num_questions, entities, town_kinds, person_kinds, extra_towns)
    n_two_hop = round(num_questions * two_hop_fraction)
    n_one_hop = num_questions - n_two_hop
    n_person_q = round(n_one_hop * len(person_kinds) / max(1, len(town_kinds) + len(person_kinds)))
    n_persons = n_person_q + n_two_hop
    towns = [_make_town(rng, names, i) for i in range(n_one_hop - n_person_q + n_persons + extra_towns)]
    persons = [_make_person(rng, names, i, towns) for i in range(n_persons)]

    records: list[QARecord] = []
    order = rng.sample(range(len(towns)), len(towns))
    for i in range(n_one_hop - n_person_q):
        kind, template, get = rng.choice(town_kinds)
        town = towns[order[i]]
        question = template.format(name=town.name)
        records.append(_record(seed, kind, question, get(town), 1, [town.id], [question]))
    for person in persons[:n_person_q]:
        kind, template, get = rng.choice(person_kinds)
        question = template.format(name=person.name)
        records.append(_record(seed, kind, question, get(person), 1, [person.id], [question]))
    for person in persons[n_person_q:]:
        town = person.birthplace
        question = f"Who founded the town where {person.name} was born?"
        queries = [f"Where was {person.name} born?", f"Who founded {town.name}?"]
        records.append(
            _record(seed, "founder_of_birthplace", question, town.founder, 2, [person.id, town.id], queries)
        )
    rng.shuffle(records)
    records = [_renumber(r, seed, i) for i, r in enumerate(records)]

    passages = [Passage(t.id, t.name, _town_text(t), SYNTHETIC_SOURCE) for t in towns]
    passages += [Passage(p.id, p.name, _person_text(p), SYNTHETIC_SOURCE) for p in persons]
    return SyntheticTask(records, passages)


def _check_args(num_questions: Any, two_hop_fraction: Any, kinds: Any, extra_towns: Any) -> None:
    if isinstance(num_questions, bool) or not isinstance(num_questions, int) or num_questions < 1:
        raise ConfigError(f"num_questions must be an integer >= 1, got {num_questions!r}")
    if (
        isinstance(two_hop_fraction, bool)
        or not isinstance(two_hop_fraction, (int, float))
        or not (0.0 <= two_hop_fraction <= 1.0)
    ):
        raise ConfigError(f"two_hop_fraction must be a number in [0, 1], got {two_hop_fraction!r}")
    if isinstance(extra_towns, bool) or not isinstance(extra_towns, int) or extra_towns < 0:
        raise ConfigError(f"extra_towns must be an integer >= 0, got {extra_towns!r}")
    if kinds is not None:
        valid = [q[0] for q in _TOWN_QUESTIONS + _PERSON_QUESTIONS]
        if isinstance(kinds, str) or not kinds:
            raise ConfigError(f"kinds must be a non-empty list of question kinds from {valid}, got {kinds!r}")
        unknown = [k for k in kinds if k not in valid]
        if unknown:
            raise ConfigError(f"unknown question kind(s) {unknown}; valid kinds: {', '.join(valid)}")


def _check_pool(num_questions: int, two_hop_fraction: float, entities: Any, n_town: int, n_person: int) -> None:
    if isinstance(entities, bool) or not isinstance(entities, int) or entities < 1:
        raise ConfigError(f"entities must be an integer >= 1 or None, got {entities!r}")
    if two_hop_fraction:
        raise ConfigError("entities (a fixed pool) supports one-hop questions only; set two_hop_fraction 0")
    n_persons = _pool_persons(entities, n_town, n_person)
    pairs = (entities - n_persons) * n_town + n_persons * n_person
    if pairs < num_questions:
        raise ConfigError(
            f"{entities} entities give {pairs} distinct questions of the chosen kinds, fewer than "
            f"num_questions={num_questions}; raise entities"
        )


def _check_neighbours(
    two_hop_fraction: float, entities: Any, kinds: Any, held_out: Any, num_questions: int
) -> None:
    if isinstance(held_out, bool) or not isinstance(held_out, int) or not 0 <= held_out < num_questions:
        raise ConfigError(
            f"held_out must be an integer in [0, num_questions={num_questions}), got {held_out!r}"
        )
    if two_hop_fraction or entities is not None:
        raise ConfigError(
            "neighbours (towns on a ring) asks one-hop questions of a new town each; set two_hop_fraction 0 "
            "and entities None"
        )
    town = {q[0] for q in _TOWN_QUESTIONS}
    if kinds is not None and not set(kinds) <= town:
        raise ConfigError(
            f"neighbours asks about towns only; kinds {sorted(set(kinds) - town)} are about people "
            f"(town kinds: {', '.join(sorted(town))})"
        )


# One sentence per town fact, in the order the passage states them (neighbours layout).
_TOWN_SENTENCES: dict[str, Callable[[_Town], str]] = {
    "founder": lambda t: f"{t.name} was founded by {t.founder}.",
    "founding_year": lambda t: f"{t.name} was founded in {t.year}.",
    "river": lambda t: f"{t.name} is on the {t.river} river.",
    "population": lambda t: f"The population of {t.name} is {t.population}.",
}


def _ring_task(
    rng: random.Random,
    names: _Names,
    seed: int,
    num_questions: int,
    town_kinds: list[tuple[str, str, Callable[[_Town], str]]],
    extra_towns: int,
    held_out: int,
    pools: _WordPools,
) -> SyntheticTask:
    """One question per town, towns on rings (the held-out questions' towns on their own), each passage naming
    its two neighbours before its facts."""
    stated = [kind for kind in _TOWN_SENTENCES if kind in {q[0] for q in town_kinds}]
    passages: list[Passage] = []
    records: list[QARecord] = []
    count = 0
    for asked, extra in _ring_sizes(num_questions, extra_towns, held_out):
        towns = [pools.apply(rng, _make_town(rng, names, count + i), count + i) for i in range(max(3, asked + extra))]
        count += len(towns)
        ring = rng.sample(towns, len(towns))
        for i, town in enumerate(ring):
            before, after = ring[i - 1], ring[(i + 1) % len(ring)]
            facts = " ".join(_TOWN_SENTENCES[kind](town) for kind in stated)
            text = f"{town.name} lies between {before.name} and {after.name}. {facts}"
            passages.append(Passage(town.id, town.name, text, SYNTHETIC_SOURCE))
        for town in ring[:asked]:
            kind, template, get = rng.choice(town_kinds)
            question = template.format(name=town.name)
            records.append(_record(seed, kind, question, get(town), 1, [town.id], [question]))
    passages.sort(key=lambda p: p.id)
    records = [_renumber(r, seed, i) for i, r in enumerate(records)]
    return SyntheticTask(records, passages)


def _ring_sizes(num_questions: int, extra_towns: int, held_out: int) -> list[tuple[int, int]]:
    """``(questions, extra towns)`` of each ring: the training ring, then the held-out one (if any)."""
    sizes = [num_questions - held_out] + ([held_out] if held_out else [])
    extras = [extra_towns - extra_towns // 2, extra_towns // 2] if held_out else [extra_towns]
    return list(zip(sizes, extras))


@dataclass(frozen=True)
class _WordPools:
    """Town names as pairs of recurring words, and populations from a fixed set (``name_pool``/``value_pool``)."""

    names: tuple[str, ...] = ()
    values: tuple[int, ...] = ()

    @classmethod
    def build(
        cls, rng: random.Random, names: _Names, name_pool: Any, value_pool: Any, towns: int
    ) -> _WordPools:
        for label, value in (("name_pool", name_pool), ("value_pool", value_pool)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise ConfigError(f"{label} must be an integer >= 2 or None, got {value!r}")
        pairs: list[str] = []
        if name_pool is not None:
            if name_pool**2 < towns:
                raise ConfigError(
                    f"name_pool={name_pool} gives {name_pool ** 2} two-word names, fewer than the {towns} towns "
                    f"of the rings; raise it to at least {math.isqrt(towns - 1) + 1}"
                )
            firsts = [names.word((2, 2)) for _ in range(name_pool)]
            seconds = [names.word((2, 2)) for _ in range(name_pool)]
            pairs = [f"{a} {b}" for a in firsts for b in seconds]
            rng.shuffle(pairs)
        values = sorted(rng.sample(range(200, 100_000), value_pool)) if value_pool is not None else []
        return cls(tuple(pairs), tuple(values))

    def apply(self, rng: random.Random, town: _Town, index: int) -> _Town:
        """``town`` (the ``index``-th of the task) with pair ``index`` as its name and its population drawn from
        the pool (each when set)."""
        name = self.names[index] if self.names else town.name
        population = rng.choice(self.values) if self.values else town.population
        return replace(town, name=name, population=population)


def _pool_persons(entities: int, n_town: int, n_person: int) -> int:
    """People among the pool's entities, in proportion to the question kinds about people."""
    if not n_town:
        return entities
    return round(entities * n_person / (n_town + n_person))


def _pooled_task(
    rng: random.Random,
    names: _Names,
    seed: int,
    num_questions: int,
    entities: int,
    town_kinds: list[tuple[str, str, Callable[[_Town], str]]],
    person_kinds: list[tuple[str, str, Callable[[_Person], str]]],
    extra_towns: int,
) -> SyntheticTask:
    """Questions drawn without repetition from (entity, kind) pairs over a fixed pool of entities."""
    n_persons = _pool_persons(entities, len(town_kinds), len(person_kinds))
    towns = [_make_town(rng, names, i) for i in range(entities - n_persons + extra_towns)]
    persons = [_make_person(rng, names, i, towns) for i in range(n_persons)]
    pairs: list[tuple[Any, tuple[str, str, Callable[[Any], str]]]] = [
        (t, q) for t in towns[: entities - n_persons] for q in town_kinds
    ]
    pairs += [(p, q) for p in persons for q in person_kinds]
    records = []
    for entity, (kind, template, get) in rng.sample(pairs, num_questions):
        question = template.format(name=entity.name)
        records.append(_record(seed, kind, question, get(entity), 1, [entity.id], [question]))
    records = [_renumber(r, seed, i) for i, r in enumerate(records)]
    passages = [Passage(t.id, t.name, _town_text(t), SYNTHETIC_SOURCE) for t in towns]
    passages += [Passage(p.id, p.name, _person_text(p), SYNTHETIC_SOURCE) for p in persons]
    return SyntheticTask(records, passages)


def _make_town(rng: random.Random, names: _Names, i: int) -> _Town:
    return _Town(
        id=f"town-{i:04d}",
        name=names.word(),
        founder=names.person(),
        year=rng.randint(1100, 1899),
        river=names.word((2, 2)),
        population=rng.randint(200, 99_999),
    )


def _make_person(rng: random.Random, names: _Names, i: int, towns: list[_Town]) -> _Person:
    return _Person(
        id=f"person-{i:04d}",
        name=names.person(),
        birthplace=rng.choice(towns),
        year=rng.randint(1700, 1999),
        trade=rng.choice(_TRADES),
    )


def _record(
    seed: int, kind: str, question: str, answer: str, hops: int, support: list[str], queries: list[str]
) -> QARecord:
    metadata = {
        "hops": hops,
        "kind": kind,
        "support": tuple(support),
        "queries": tuple(queries),
        "seed": seed,
    }
    return QARecord(question=question, answers=[answer], source=SYNTHETIC_SOURCE, id="", metadata=metadata)


def _renumber(record: QARecord, seed: int, index: int) -> QARecord:
    return QARecord(
        record.question, record.answers, record.source, f"synthetic:{seed}:{index}", record.metadata
    )
