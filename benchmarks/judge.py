"""MBE: an LLM judge deciding whether an answer means the same as one of the gold answers.

The paper's model-based evaluation asks a judge model (gpt-4o-mini there) for a rationale and a verdict,
``correct`` or ``incorrect``, as JSON. Any OpenAI-compatible endpoint works here (a :class:`ChatClient`).
Answers that match a gold exactly skip the judge; an episode without an answer is incorrect without asking.
Verdicts are cached in SQLite under the run's folder, keyed by (judge model, question, golds, prediction), so
a re-run or a second report never pays twice. A reply that cannot be read is asked again a bounded number of
times, then counted as a judge failure: reported, and never scored as correct.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drgym.errors import ConfigError, LLMError
from drgym.llm.base import ChatClient, ContextOverflowError
from drgym.reward import em_paper, em_squad, split_gold

__all__ = [
    "JUDGE_PROMPT",
    "Judge",
    "JudgeStats",
    "JudgeUnavailable",
    "Verdict",
    "VerdictCache",
    "judge_prompt",
    "parse_verdict",
]

logger = logging.getLogger(__name__)

JUDGE_PROMPT = """\
You will be given a question and a list of ground-truth answers; each item of the list is an acceptable \
answer. Decide whether the predicted answer (pred_answer) correctly answers the question, judged against \
that list. First explain your reasoning, then give your verdict: correct or incorrect.

Criteria:
1. The pred_answer need not match any ground-truth answer word for word, but it must mean the same thing \
as an answer to the question.
2. Any item of the ground-truth list counts as a right answer; the pred_answer must mean the same as at \
least one of them.

question: {question}
ground truth answers: {golds}
pred_answer: {prediction}

Reply with JSON in exactly this form:
```json
{{
    "rationale": "your reasoning, as text",
    "judgement": "correct or incorrect (one of these two words only)"
}}
```
"""

_RETRY_NOTE = (
    'Your reply could not be read. Reply with only the JSON object: {"rationale": "...", '
    '"judgement": "correct"} or {"rationale": "...", "judgement": "incorrect"}.'
)
_VERDICT_KEYS = ("judgement", "judgment", "verdict")
_WORDS = {"correct": True, "incorrect": False, "true": True, "false": False}


class JudgeUnavailable(LLMError):
    """The judge endpoint did not answer at all: MBE is reported as not computed (never as zero)."""


@dataclass(frozen=True)
class Verdict:
    """One judgement. ``correct`` is None for a judge failure.

    ``how``: ``exact`` (matched a gold, no request), ``no_answer`` (nothing to judge), ``cache``, ``judge``
    (asked now) or ``failure`` (unreadable replies or a failed request).
    """

    correct: bool | None
    rationale: str
    how: str
    requests: int = 0


@dataclass
class JudgeStats:
    """Counters over a judge's lifetime, for the report."""

    requests: int = 0
    judged: int = 0
    cache_hits: int = 0
    exact: int = 0
    no_answer: int = 0
    failures: int = 0

    def to_dict(self) -> dict[str, int]:
        """A plain dict, ready for JSON."""
        return dict(self.__dict__)


def judge_prompt(question: str, golds: Sequence[str], prediction: str) -> str:
    """The judge's user message for one answer."""
    return JUDGE_PROMPT.format(
        question=question, golds=json.dumps(list(golds), ensure_ascii=False), prediction=prediction
    )


def parse_verdict(text: str) -> tuple[bool, str]:
    """``(correct, rationale)`` from a judge reply: the first JSON object in it with a verdict key.

    Code fences and prose around the object are tolerated.

    Raises:
        ValueError: No readable verdict in the reply.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            verdict = _verdict_value(obj)
            if verdict is not None:
                return verdict, str(obj.get("rationale", ""))
        start = text.find("{", start + 1)
    raise ValueError(f"no JSON verdict in the judge's reply: {text[:200]!r}")


def _verdict_value(obj: dict[str, Any]) -> bool | None:
    for key in _VERDICT_KEYS:
        value = obj.get(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.strip().strip(".'\"").lower()
            if word in _WORDS:
                return _WORDS[word]
    return None


# ------------------------------------------------------------------------------------------------- cache


class VerdictCache:
    """Judge verdicts in a SQLite file (``path=None``: in memory only).

    A file that is not a readable database is moved aside (``<name>.corrupt-<time>``, kept for inspection)
    and a fresh cache is started: a damaged cache costs requests, never the run.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect(target)
        except sqlite3.DatabaseError as exc:
            assert self.path is not None  # an in-memory database cannot be corrupt
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            self.path.replace(aside)
            logger.warning(
                "judge cache %s is unreadable (%s); moved to %s, starting afresh", self.path, exc, aside
            )
            return self._connect(target)

    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, check_same_thread=False)
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, model TEXT, question TEXT, "
                "golds TEXT, prediction TEXT, correct INTEGER, rationale TEXT, created REAL)"
            )
            db.execute("SELECT count(*) FROM verdicts").fetchone()
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def key(model: str, question: str, golds: Sequence[str], prediction: str) -> str:
        """The cache key: a hash of the judge model, the question, the golds (in order) and the prediction."""
        blob = json.dumps([model, question, list(golds), prediction], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> tuple[bool, str] | None:
        """``(correct, rationale)`` for a cached key, else None."""
        with self._lock:
            row = self._db.execute("SELECT correct, rationale FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else (bool(row[0]), str(row[1]))

    def put(
        self,
        key: str,
        model: str,
        question: str,
        golds: Sequence[str],
        prediction: str,
        correct: bool,
        rationale: str,
    ) -> None:
        """Store a verdict (committed at once, so a crash later loses nothing judged)."""
        row = (
            key,
            model,
            question,
            json.dumps(list(golds), ensure_ascii=False),
            prediction,
            int(correct),
            rationale,
            time.time(),
        )
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


# ------------------------------------------------------------------------------------------------- judge


class Judge:
    """Judges answers through a chat model.

    Args:
        client: Any :class:`ChatClient` (e.g. ``make_client("openai:URL", model="gpt-4o-mini")``).
        model: The judge model's name; part of the cache key, so verdicts of different judges never mix.
        cache: Where verdicts are kept (default: in memory).
        max_attempts: Requests per answer before an unreadable reply counts as a judge failure.
        concurrency: Requests in flight at once.
        temperature: Sampling temperature of the judge (0: as repeatable as the endpoint allows).
        max_tokens: Reply length limit.
    """

    def __init__(
        self,
        client: ChatClient,
        model: str,
        *,
        cache: VerdictCache | None = None,
        max_attempts: int = 3,
        concurrency: int = 8,
        temperature: float = 0.0,
        max_tokens: int = 512,
    ) -> None:
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.client = client
        self.model = model
        self.cache = cache if cache is not None else VerdictCache(None)
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.sampling = {"temperature": temperature, "max_tokens": max_tokens}
        self.stats = JudgeStats()

    async def verdict(self, question: str, golds: str | Sequence[str], prediction: str | None) -> Verdict:
        """Judge one answer; a failed request becomes a failure verdict, not an exception."""
        gold_list = split_gold(golds)
        quick = await self._without_request(question, gold_list, prediction)
        if quick is not None:
            return quick
        assert prediction is not None
        try:
            return await self._ask(question, gold_list, prediction)
        except LLMError as exc:
            self.stats.failures += 1
            return Verdict(None, f"judge request failed: {exc}", "failure")

    async def verdicts(self, items: Sequence[tuple[str, str | Sequence[str], str | None]]) -> list[Verdict]:
        """Judge many ``(question, golds, prediction)`` items, in order.

        The first item that needs a request is sent alone: if the endpoint does not answer it at all, the
        whole batch stops with :class:`JudgeUnavailable` instead of retrying a dead server once per answer.

        Raises:
            JudgeUnavailable: The first request failed (no server, wrong URL or model, refused).
        """
        results: list[Verdict | None] = [None] * len(items)
        pending: list[int] = []
        for i, (question, golds, prediction) in enumerate(items):
            results[i] = await self._without_request(question, split_gold(golds), prediction)
            if results[i] is None:
                pending.append(i)
        if pending:
            first = pending[0]
            question, golds, prediction = items[first]
            assert prediction is not None
            try:
                results[first] = await self._ask(question, split_gold(golds), prediction)
            except ContextOverflowError as exc:
                self.stats.failures += 1
                results[first] = Verdict(None, f"judge request failed: {exc}", "failure")
            except LLMError as exc:
                raise JudgeUnavailable(f"the judge endpoint did not answer: {exc}") from exc
            semaphore = asyncio.Semaphore(self.concurrency)

            async def one(i: int) -> None:
                async with semaphore:
                    results[i] = await self.verdict(*items[i])

            await asyncio.gather(*(one(i) for i in pending[1:]))
        return [r for r in results if r is not None]

    async def _without_request(
        self, question: str, golds: list[str], prediction: str | None
    ) -> Verdict | None:
        if prediction is None or not prediction.strip():
            self.stats.no_answer += 1
            return Verdict(False, "no answer to judge", "no_answer")
        if golds and (em_paper(prediction, golds) == 1.0 or em_squad(prediction, golds) == 1.0):
            self.stats.exact += 1
            return Verdict(True, "exact match with a gold answer", "exact")
        key = VerdictCache.key(self.model, question, golds, prediction)
        cached = await asyncio.to_thread(self.cache.get, key)
        if cached is None:
            return None
        self.stats.cache_hits += 1
        return Verdict(cached[0], cached[1], "cache")

    async def _ask(self, question: str, golds: list[str], prediction: str) -> Verdict:
        prompt = [{"role": "user", "content": judge_prompt(question, golds, prediction)}]
        messages = prompt
        reply = ""
        for attempt in range(1, self.max_attempts + 1):
            completion = await self.client.complete(messages, **self.sampling)
            self.stats.requests += 1
            reply = completion.text
            try:
                correct, rationale = parse_verdict(reply)
            except ValueError:
                logger.info(
                    "unreadable judge reply (attempt %d of %d): %.200r", attempt, self.max_attempts, reply
                )
                messages = [
                    *prompt,
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": _RETRY_NOTE},
                ]
                continue
            key = VerdictCache.key(self.model, question, golds, prediction)
            await asyncio.to_thread(
                self.cache.put, key, self.model, question, golds, prediction, correct, rationale
            )
            self.stats.judged += 1
            return Verdict(correct, rationale, "judge", attempt)
        self.stats.failures += 1
        return Verdict(
            None,
            f"no readable verdict after {self.max_attempts} attempts; last reply: {reply[:200]!r}",
            "failure",
            self.max_attempts,
        )
