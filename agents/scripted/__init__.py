"""The scripted (non-LLM) agent: search the question, browse the top results, answer with the best span.

It needs no model, plays the env's protocol exactly, and sets the floor every learning agent must beat. With
``vague_query_rate`` or ``wrong_result_rate`` it is also the noisy teacher of the GRPO warm-start: it shows the
mechanics (search, copy a value from a result into the answer) but often searches vaguely or reads the wrong
result, so that imitation alone does not give the right answer and RL has something left to learn.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, ClassVar, Literal

from drgym.agent import BaseAgent
from drgym.answer_spans import SENTENCE
from drgym.errors import ConfigError

from .spans import best_span

__all__ = ["ScriptedAgent", "evidence_sentence", "search_results"]

_URL = re.compile(r"https?://[^\s<>\"')\]]+")
_RESULT = re.compile(r"^(\d+)\. (.+)$", re.MULTILINE)
_WRONG_RESULT_CHOICES = ("random", "last")


def evidence_sentence(answer: str, texts: list[str]) -> str | None:
    """The first sentence of ``texts`` (result headers and URLs aside) that states ``answer``, or ``None``."""
    for text in texts:
        for line in text.splitlines():
            if line.strip().startswith(("URL:", "Results for query")) or _RESULT.match(line.strip()):
                continue
            for sentence in SENTENCE.split(line):
                if answer in sentence:
                    return sentence.strip()
    return None


def search_results(observation: str) -> list[tuple[str, str]]:
    """``(title, text)`` of each numbered result of a rendered search observation, in rank order."""
    heads = list(_RESULT.finditer(observation))
    out = []
    for head, nxt in zip(heads, [*heads[1:], None]):
        end = nxt.start() if nxt is not None else len(observation)
        out.append((head.group(2).strip(), observation[head.start() : end]))
    return out


class ScriptedAgent(BaseAgent):
    """Three turns: ``web_search([question])``, ``browse_webpage(top URLs)``, ``<answer>best span</answer>``.

    Args:
        pages_to_read: URLs of the search results to browse (0: answer from the search results alone).
        named_result_only: Answer from the search result whose title the question names, when there is one
            (a result about another entity is no evidence), instead of from everything read.
        wrong_result_rate: Probability of answering from the wrong result: the agent finds the result
            whose title the question names, then reads another result instead, as if it were about the asked
            entity (the question with that result's title in place of the asked name), and copies its value.
            0 (default): never.
        wrong_result: Which other result the agent reads when it is wrong: ``"random"`` (default, any of
            them alike) or ``"last"`` (the lowest-ranked one, the last it read: a reader with a recency bias).
            With ``"last"`` and a rate above 0.5 the teacher's most frequent answer is wrong, so a policy that
            imitates it faithfully answers wrong when greedy, and only learning from the reward fixes that.
        vague_query_rate: Probability of searching with a vaguer query: the question without its last word
            ("What is the population of Reithand?" for "... of Reithand Stizain?"), which finds another entity
            more often than the asked one; the agent then answers from what it found. 0
            (default): always the question itself. Above 0.5 the teacher's usual query is the vague one, so a
            policy that imitates it faithfully searches vaguely when greedy: the query is RL's to fix.
        quote_evidence: Think by quoting the sentence the answer is read from (``<think>The population of X
            is 5.</think><answer>5</answer>``) instead of a fixed phrase: the answer is then a copy of a copy,
            and a model imitating the agent is shown the copy out of a result step by step.
        seed: Seed of that choice; the choice is a pure function of ``(seed, question)``.
    """

    name = "scripted"
    env_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        pages_to_read: int = 3,
        *,
        named_result_only: bool = False,
        wrong_result_rate: float = 0.0,
        wrong_result: Literal["random", "last"] = "random",
        vague_query_rate: float = 0.0,
        quote_evidence: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, rate in (("wrong_result_rate", wrong_result_rate), ("vague_query_rate", vague_query_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ConfigError(f"`{name}` must be a number in [0, 1], got {rate!r}")
        if wrong_result not in _WRONG_RESULT_CHOICES:
            raise ConfigError(f"`wrong_result` must be one of {list(_WRONG_RESULT_CHOICES)}, got {wrong_result!r}")
        self.pages_to_read = pages_to_read
        self.named_result_only = named_result_only
        self.wrong_result_rate = float(wrong_result_rate)
        self.wrong_result = wrong_result
        self.vague_query_rate = float(vague_query_rate)
        self.quote_evidence = quote_evidence
        self.seed = seed
        self._question = ""
        self._texts: list[str] = []
        self._step = 0

    def reset(self, question: str, info: dict[str, Any]) -> None:
        super().reset(question, info)
        self._question = info.get("question", question)
        self._texts = []
        self._step = 0

    def act(self, observation: str, info: dict[str, Any]) -> str:
        self._step += 1
        if self._step > 1:
            self._texts.append(observation)
        if self._step == 1:
            call = {"name": "web_search", "arguments": {"query": [self._query()]}}
            return f"<think>I will search for the question.</think><tool_call>{json.dumps(call)}</tool_call>"
        if self._step == 2:
            urls = list(dict.fromkeys(_URL.findall(observation)))[: self.pages_to_read]
            if urls:
                call = {"name": "browse_webpage", "arguments": {"url_list": urls}}
                return f"<think>I will read the top results.</think><tool_call>{json.dumps(call)}</tool_call>"
        wrong = self._wrong_answer() or self._vague_answer()
        if wrong is not None:
            answer, texts = wrong
        else:
            texts = self._evidence()
            answer = best_span(self._question, texts) or "unknown"
        quote = evidence_sentence(answer, texts) if self.quote_evidence else None
        thought = quote or f"The best-supported span is {answer}."
        return f"<think>{thought}</think><answer>{answer}</answer>"

    def _query(self) -> str:
        """The question, or at ``vague_query_rate`` the question without its last word."""
        words = self._question.split(" ")
        rng = random.Random(f"scripted-query-{self.seed}-{self._question}")
        if len(words) < 3 or rng.random() >= self.vague_query_rate:
            return self._question
        last = words[-1]
        end = last[len(last.rstrip("?.!")) :]  # the question mark stays
        return " ".join(words[:-1]) + end

    def _vague_answer(self) -> tuple[str, list[str]] | None:
        """After a vague query that missed the asked entity: the top result read as if it were about it (the
        vague query's last word widened to that result's title), its value and its text (or ``None``)."""
        query = self._query()
        results = search_results(self._texts[0]) if self._texts else []
        if query == self._question or not results or any(title in self._question for title, _ in results):
            return None
        title, text = results[0]
        kept = query.split(" ")[-1].rstrip("?.!")
        answer = best_span(query.replace(kept, title) if kept and kept in title else query, [text])
        return (answer, [text]) if answer is not None else None

    def _evidence(self) -> list[str]:
        """What the answer is read from: everything, or the result the question names (if asked and found)."""
        if self.named_result_only and self._texts:
            named = [text for title, text in search_results(self._texts[0]) if title in self._question]
            if named:
                return named[:1] + self._texts[1:]
        return self._texts

    def _wrong_answer(self) -> tuple[str, list[str]] | None:
        """The value of a result about another entity, read as if it answered the question, and that result's
        text (or ``None``)."""
        if not self.wrong_result_rate or not self._texts:
            return None
        rng = random.Random(f"scripted-{self.seed}-{self._question}")
        if rng.random() >= self.wrong_result_rate:
            return None
        results = search_results(self._texts[0])
        asked = next((title for title, _ in results if title in self._question), None)
        others = [(title, text) for title, text in results if asked is not None and title != asked]
        if not others:
            return None
        pick = rng.randrange(len(others))  # drawn either way: the same draws decide right or wrong per seed
        title, text = others[-1] if self.wrong_result == "last" else others[pick]
        answer = best_span(self._question.replace(asked, title), [text])
        return (answer, [text]) if answer is not None else None

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        return self.act(observation, info)
