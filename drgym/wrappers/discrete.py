"""``DiscreteResearchWrapper``: WebResearch-v0 with a ``Discrete`` action space and a ``Box`` observation.

Description:
    Text policies write a whole turn; classic RL algorithms (PPO, DQN, A2C in Stable-Baselines3) need fixed
    spaces. This wrapper offers, every turn, a fixed number of *candidate actions* built from what the episode
    has seen, plays the chosen one as a protocol turn through the wrapped env, and observes a numeric feature
    vector of the state. It is a baseline for classic RL research on the same questions, backends and reward as
    the text env: the env's dynamics and reward are untouched.

Action:
    ``Discrete(1 + n_queries + n_results + n_candidates)``, slots in this order:

    * ``0``: search the question (always valid).
    * ``1 … n_queries``: search the question plus the k-th best candidate entity not searched yet (a name span
      from what was seen); the follow-up query of a multi-hop question.
    * next ``n_results``: browse result i of the latest search.
    * last ``n_candidates``: answer with the j-th best candidate span (for a yes/no question: ``yes``, ``no``).

    A slot with nothing behind it in the current state (browse before any search, answer before any span) is
    *invalid*: it plays slot 0 instead, so it costs a turn and is penalised only through the env's own dynamics
    (fewer turns left; −1 if the episode runs out of turns unanswered). ``action_masks()`` returns the valid
    slots for sb3-contrib's ``MaskablePPO``.

Observation:
    ``Box(-1, 1, (n_features,), float32)``: episode counters, per-slot candidate features and the hashed question;
    the layout is documented in ``drgym.wrappers._features``. Deterministic: the same episode and actions give
    the same vectors in every process.

Rewards:
    The wrapped env's reward (paper mode: F1 of the answer at the end, −1 for a trajectory with no answer).

Episode End:
    As the wrapped env: terminated on an answer, truncated at ``max_turns``.

Info:
    The wrapped env's ``info`` plus ``discrete_action``: the chosen ``index``, its ``kind``, whether it was
    ``valid``, the ``played`` slot kind, and the protocol ``turn`` text sent to the env.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, SupportsInt

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from drgym.errors import ConfigError
from drgym.wrappers._candidates import SpanStats
from drgym.wrappers._features import dense_size, encode, hashed_words
from drgym.wrappers._parse import SearchHit
from drgym.wrappers._state import EpisodeState

__all__ = ["SLOT_KINDS", "Candidate", "DiscreteResearchWrapper"]

SLOT_KINDS = ("search_question", "search_entity", "browse", "answer")
"""Kinds of action slots, in slot order."""

_TOOL_KIND = {"search_question": "search", "search_entity": "search", "browse": "browse", "answer": "answer"}


@dataclass(frozen=True)
class Candidate:
    """One slot of the action space in the current state.

    Attributes:
        index: The action index.
        kind: One of ``SLOT_KINDS``.
        valid: Whether something stands behind the slot now; an invalid slot plays slot 0 instead.
        detail: The query, URL or answer of the slot (empty when invalid).
        turn: The protocol turn this slot sends when valid (empty when invalid).
    """

    index: int
    kind: str
    valid: bool
    detail: str = ""
    turn: str = ""


class DiscreteResearchWrapper(gym.Wrapper[np.ndarray, np.int64, str, str], gym.utils.RecordConstructorArgs):
    """Fixed ``Discrete`` actions and ``Box`` features over ``drgym/WebResearch-v0`` (see the module docstring).

    Args:
        env: A WebResearch env (``gymnasium.make("drgym/WebResearch-v0", ...)``), possibly wrapped.
        n_candidates: Answer slots (candidate spans offered each turn); at least 2, for yes and no.
        n_queries: Entity-query slots (follow-up searches).
        n_results: Browse slots (results of the latest search that can be read).
        n_features: Length of the observation vector; the part beyond the candidate features holds the hashed
            question, so it must be at least :meth:`min_features`.
    """

    def __init__(
        self,
        env: gym.Env[str, str],
        *,
        n_candidates: int = 5,
        n_queries: int = 3,
        n_results: int = 5,
        n_features: int = 128,
    ) -> None:
        # Recorded so `env.spec` can rebuild the wrapper (gymnasium's check_env and `gym.make(spec)` do).
        gym.utils.RecordConstructorArgs.__init__(
            self, n_candidates=n_candidates, n_queries=n_queries, n_results=n_results, n_features=n_features
        )
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.action_space, spaces.Text):
            raise ConfigError(
                f"DiscreteResearchWrapper wraps a text env such as drgym/WebResearch-v0; the given env's action "
                f"space is {env.action_space}"
            )
        for name, value, least in (("n_candidates", n_candidates, 2), ("n_queries", n_queries, 0),
                                   ("n_results", n_results, 0), ("n_features", n_features, 1)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"`{name}` must be an integer >= {least}, got {value!r}")
        needed = self.min_features(n_candidates=n_candidates, n_queries=n_queries, n_results=n_results)
        if n_features < needed:
            raise ConfigError(
                f"`n_features` must be at least {needed} for {n_queries} query, {n_results} browse and "
                f"{n_candidates} answer slots, got {n_features}; raise it or use fewer slots"
            )
        self.n_candidates, self.n_queries, self.n_results, self.n_features = (
            n_candidates, n_queries, n_results, n_features,
        )  # fmt: skip
        self.action_space = spaces.Discrete(1 + n_queries + n_results + n_candidates)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(n_features,), dtype=np.float32)
        self._state: EpisodeState | None = None
        self._slots: list[Candidate] = []
        self._question_hash = np.zeros(0, dtype=np.float32)
        self._features = np.zeros(n_features, dtype=np.float32)

    @staticmethod
    def min_features(*, n_candidates: int = 5, n_queries: int = 3, n_results: int = 5) -> int:
        """The smallest ``n_features`` for these slot counts (the candidate features, no hashed question)."""
        return dense_size(n_queries, n_results, n_candidates)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the wrapped env (same ``seed`` and ``options``) and observe the fresh episode."""
        observation, info = self.env.reset(seed=seed, options=options)
        question = info.get("question", observation) if isinstance(info, dict) else observation
        self._state = EpisodeState(question=str(question))
        dims = self.n_features - self.min_features(
            n_candidates=self.n_candidates, n_queries=self.n_queries, n_results=self.n_results
        )
        self._question_hash = hashed_words(self._state.question, dims)
        self._refresh()
        return self._features.copy(), info

    def step(self, action: SupportsInt | np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play candidate ``action`` (an invalid slot plays slot 0) and observe the new state."""
        if self._state is None:
            raise gym.error.ResetNeeded("Cannot call `step()` before `reset()`; call `reset()` first.")
        index = self._index(action)
        chosen = self._slots[index]
        played = chosen if chosen.valid else self._slots[0]
        observation, reward, terminated, truncated, info = self.env.step(played.turn)
        self._state.absorb(_TOOL_KIND[played.kind], played.detail, observation)
        self._refresh()
        info = dict(info)
        info["discrete_action"] = {
            "index": index,
            "kind": chosen.kind,
            "valid": chosen.valid,
            "played": played.kind,
            "turn": played.turn,
        }
        return self._features.copy(), float(reward), bool(terminated), bool(truncated), info

    # ------------------------------------------------------------------ candidates
    def action_masks(self) -> np.ndarray:
        """Boolean mask of the slots valid now (slot 0 always is); the hook sb3-contrib's MaskablePPO calls."""
        return np.array([slot.valid for slot in self._slots] or [True], dtype=bool)

    def candidates(self) -> list[Candidate]:
        """Every action slot in the current state, in index order."""
        return list(self._slots)

    def _index(self, action: SupportsInt | np.ndarray) -> int:
        try:
            index = int(np.asarray(action).reshape(()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the action must be one integer index, got {action!r}") from exc
        if not 0 <= index < self.action_space.n:
            raise ValueError(f"the action must be an index in [0, {self.action_space.n}), got {index}")
        return index

    def _refresh(self) -> None:
        """Rebuild the slots and the feature vector from the current state."""
        state = self._state
        assert state is not None
        yes_no = state.spans.yes_no
        entities: list[SpanStats | None] = [
            s
            for s in state.spans.ranked(kind="name")
            if _entity_query(state.question, s).lower() not in state.searched
        ][: self.n_queries]
        entities += [None] * (self.n_queries - len(entities))
        results: list[SearchHit | None] = list(state.results[: self.n_results])
        results += [None] * (self.n_results - len(results))
        answers: list[SpanStats | None] = [] if yes_no else list(state.spans.ranked()[: self.n_candidates])
        answers += [None] * (self.n_candidates - len(answers))

        slots = [_search(0, "search_question", state.question)]
        for entity in entities:
            query = _entity_query(state.question, entity) if entity is not None else ""
            empty = Candidate(len(slots), "search_entity", False)
            slots.append(_search(len(slots), "search_entity", query) if query else empty)
        for hit in results:
            slots.append(
                _browse(len(slots), hit.url) if hit is not None else Candidate(len(slots), "browse", False)
            )
        for j, span in enumerate(answers):
            text = ("yes", "no")[j] if yes_no and j < 2 else (span.text if span is not None else "")
            slots.append(_answer(len(slots), text) if text else Candidate(len(slots), "answer", False))
        self._slots = slots
        self._features = encode(
            state,
            entities=entities,
            results=results,
            answers=answers,
            yes_no=yes_no,
            max_turns=_max_turns(self.env),
            n_features=self.n_features,
            question_hash=self._question_hash,
        )


def _max_turns(env: gym.Env[Any, Any]) -> int | None:
    """The wrapped env's turn limit, read live (never copied at construction, so it cannot go stale)."""
    value = getattr(env.unwrapped, "max_turns", None)
    return value if isinstance(value, int) and value > 0 else None


def _entity_query(question: str, entity: SpanStats) -> str:
    return f"{question} {entity.text}"


def _call(name: str, key: str, value: str) -> str:
    payload = json.dumps({"name": name, "arguments": {key: [value]}}, ensure_ascii=False)
    # Angle brackets as JSON escapes: the same string once decoded, but no text can close the tag early.
    return payload.replace("<", "\\u003c").replace(">", "\\u003e")


def _search(index: int, kind: str, query: str) -> Candidate:
    call = _call("web_search", "query", query)
    turn = f"<think>Search for: {_plain(query)}</think><tool_call>{call}</tool_call>"
    return Candidate(index, kind, True, query, turn)


def _browse(index: int, url: str) -> Candidate:
    call = _call("browse_webpage", "url_list", url)
    turn = f"<think>Read this result.</think><tool_call>{call}</tool_call>"
    return Candidate(index, "browse", True, url, turn)


def _answer(index: int, text: str) -> Candidate:
    answer = _plain(text)
    turn = f"<think>Answer with the best candidate.</think><answer>{answer}</answer>"
    return Candidate(index, "answer", True, answer, turn)


def _plain(text: str) -> str:
    """Text safe inside a tag block: no angle brackets, one line."""
    return " ".join(text.replace("<", " ").replace(">", " ").split())
