"""``WebResearchEnv``: deep web research as a Gymnasium text environment.

Description:
    Each episode poses one question from a dataset. The policy answers in turns: it thinks, then either calls a
    tool (``web_search`` or ``browse_webpage``) or gives an answer, following the DeepResearcher protocol. The
    environment runs the tool and returns its result as the next observation.

Action:
    ``UnicodeText(max_action_chars)``: the policy's whole turn, e.g.
    ``<think>…</think><tool_call>{"name": "web_search", "arguments": {"query": ["…"]}}</tool_call>``.

Observation:
    ``UnicodeText(max_observation_chars)``: after ``reset`` the user turn (the question); after a tool call the
    tool result wrapped in ``<tool_response>…</tool_response>``; after an error, the error message (wrapped the
    same way) that tells the policy what to fix. ``info["messages"]`` holds the same conversation as chat
    messages (tool turns unwrapped, role ``tool``) for policies that apply their own chat template. Every
    observation, the question included, is cut to ``max_observation_chars`` (the wrapper counted).

Rewards:
    0 on every step but the last. At the end, with ``reward_mode="paper"``: −1 when the policy's own turns have
    unbalanced ``think``/``tool_call``/``answer`` tags or no answer, else the word-level F1 of the first answer
    against the gold answers (maximum over golds). Other modes (``f1``, ``em``, ``squad_f1``) score 0 on a
    broken format, as in evaluation. A ``reset(options={"question": q})`` without gold answers is played
    unscored: reward 0 at the end and ``info["scored"] = False``.

Episode End:
    ``terminated`` when the policy answers, or (``on_format_error="end"``) breaks the format. ``truncated``
    when ``max_turns`` turns pass without an answer (scored as a trajectory with no answer). Never both.

Arguments:
    See :class:`WebResearchEnv` ``__init__`` and the README's option table.

Version History:
    * v0: initial version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium.error import ResetNeeded

from drgym import _options, protocol
from drgym import protocol as _default_protocol  # `protocol` is also an argument of __init__
from drgym._observation import fit_text, fit_tool_response
from drgym.browse import Browser, BrowsingAgent, EpisodeMemory, LexicalReader, Reader
from drgym.data import list_corpora
from drgym.data.records import QARecord, describe_record, record_problem
from drgym.data.registry import unknown_name_error
from drgym.errors import BudgetExceededError, ConfigError, DrgymError
from drgym.gateway.client import GatewayBackend
from drgym.llm.base import ChatClient
from drgym.protocol_deepresearcher import PROTOCOLS, make_mode
from drgym.reward import REWARD_MODES, Score, score_answer, split_gold
from drgym.search.base import Result, SearchBackend
from drgym.search.episode import Episode, EpisodeView, SearchLayer
from drgym.search.registry import backend_names
from drgym.search.stack import SearchConfig
from drgym.services import ToolServices
from drgym.spaces import UnicodeText

__all__ = ["FORMAT_ERROR_MODES", "WebResearchEnv"]

logger = logging.getLogger(__name__)

FORMAT_ERROR_MODES = ("end", "continue")


@dataclass
class _Episode:
    """Everything one episode accumulates; dropped at the next reset so memory never grows across episodes."""

    record: QARecord
    messages: list[dict[str, Any]]
    memory: EpisodeMemory
    search: EpisodeView  # this episode's handle on the shared search stack (its own counts and budget)
    browser: Browser
    seen_urls: dict[str, str] = field(default_factory=dict)  # url -> the query that surfaced it
    turn: int = 0
    tool_calls: int = 0
    search_calls: int = 0
    pages_read: int = 0
    format_errors: int = 0
    tool_errors: int = 0
    backend_errors: int = 0
    budget_errors: int = 0
    answer: str | None = None  # the policy's answer, once it gave one
    format_problem: str | None = None  # why a scored turn broke the format (ends the episode in "end" mode)
    backend_time_s: float = 0.0
    done: bool = False


class WebResearchEnv(gym.Env[str, str]):
    """Search-and-read research episodes over a question dataset (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        dataset: str | Sequence[QARecord | Mapping[str, Any]] = "demo",
        *,
        data_source: str | Sequence[str] | None = None,
        limit: int | None = None,
        search: str | Sequence[str] | SearchBackend = "local",
        corpus: str | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        search_budget_per_episode: int | None = None,
        search_budget_global: int | None = None,
        cache_path: str | None = None,
        cache_mode: str | None = None,
        record_path: str | None = None,
        replay_path: str | None = None,
        reader: Reader | ChatClient | str | None = None,
        max_turns: int = 10,
        results_per_query: int = 10,
        max_queries_per_call: int = 3,
        max_pages_per_call: int = 5,
        browse_time_budget_s: float = 60.0,
        reward_mode: str = "paper",
        browse_only_seen_urls: bool = True,
        on_format_error: str = "end",
        max_action_chars: int = 32_768,
        max_observation_chars: int = 100_000,
        today: _dt.date | str | None = None,
        render_mode: str | None = None,
        protocol: str = "drgym",
        services: ToolServices | None = None,
    ) -> None:
        """Build the environment.

        Args:
            dataset: a dataset name (``drgym.data.list_datasets()``) or a list of ``QARecord`` / dicts with
                ``question`` and ``answers``.
            data_source: keep only records of these sources (e.g. ``"hotpotqa"``).
            limit: keep the first ``limit`` records (after filtering).
            search: a backend name (``drgym.search.backend_names()``), a list of names (a failover chain, tried
                in order), or a ``SearchBackend`` instance.
            corpus: the corpus of the ``local`` backend; default ``demo`` for the demo dataset, else ``wiki-local``.
            search_kwargs: extra arguments for the named backend (for a chain: ``{name: {...}}``).
            search_budget_per_episode: live search calls one episode may make (then an error observation).
            search_budget_global: live search calls all episodes of the env's ``services`` may make together.
            cache_path: the SQLite file of the search/page store (``cache_mode`` says how it is used; alone it
                means ``"read-write"``).
            cache_mode: ``"off"``, ``"read-write"`` (a cache of live answers: 7-day TTL, 1 GiB cap, least
                recently used evicted), ``"record"`` (keep everything each episode saw, keyed to its
                ``record_id``) or ``"replay"`` (answer only from the file: no network, a miss is an error
                observation). Default: inferred from the paths, else ``"off"``.
            record_path: the same as ``cache_mode="record", cache_path=record_path``.
            replay_path: the same as ``cache_mode="replay", cache_path=replay_path``.
            reader: how ``browse_webpage`` reads a page: ``"lexical"`` (default, no LLM), a ``Reader``
                (e.g. ``drgym.browse.BrowsingAgent(client)``), a chat client (wrapped in the paper's LLM
                browsing agent), or an LLM spec string such as ``"openai:http://localhost:8000/v1"``.
            max_turns: policy turns per episode (paper: 10, so at most 9 tool calls and an answer).
            results_per_query: search results per query (paper: 10).
            max_queries_per_call: queries of one ``web_search`` call that are run (paper: 3).
            max_pages_per_call: URLs of one ``browse_webpage`` call that are read.
            browse_time_budget_s: time budget of one page read.
            reward_mode: one of ``REWARD_MODES`` (``paper``: −1 on broken format, else F1).
            browse_only_seen_urls: only URLs seen in this episode's search results may be browsed (paper).
            on_format_error: ``end`` (paper: the episode ends with the format reward) or ``continue`` (an error
                observation; the broken turn is not scored).
            max_action_chars: longest accepted turn; longer turns are format errors.
            max_observation_chars: every observation (the question too) is cut to this length.
            today: the date stated in the system prompt, a ``datetime.date`` or an ISO string (default: today).
            render_mode: ``ansi`` (``render()`` returns the transcript) or ``human`` (prints it).
            protocol: ``drgym`` (this package's prompt and observations) or ``deepresearcher`` (the original
                code's, so a policy trained with it runs unchanged: see :mod:`drgym.protocol_deepresearcher`).
            services: the :class:`~drgym.services.ToolServices` to share with other envs (search stacks, rate
                limits, the global budget, the cache, HTTP sessions, event loops); envs given the same one
                share them. ``None``: the env makes its own and ``close()`` closes it; a given one is never
                closed by the env (its owner closes it).
        """
        _options.check_choice("reward_mode", reward_mode, REWARD_MODES)
        _options.check_choice("on_format_error", on_format_error, FORMAT_ERROR_MODES)
        _options.check_choice("protocol", protocol, PROTOCOLS)
        if render_mode is not None:
            _options.check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        _options.check_env_options(
            dataset=dataset,
            data_source=data_source,
            limit=limit,
            search=search,
            corpus=corpus,
            search_kwargs=search_kwargs,
            search_budget_per_episode=search_budget_per_episode,
            search_budget_global=search_budget_global,
            paths={"cache_path": cache_path, "record_path": record_path, "replay_path": replay_path},
            cache_mode=cache_mode,
            sizes={
                "max_turns": max_turns,
                "results_per_query": results_per_query,
                "max_queries_per_call": max_queries_per_call,
                "max_pages_per_call": max_pages_per_call,
                "max_action_chars": max_action_chars,
                "max_observation_chars": max_observation_chars,
            },
            browse_time_budget_s=browse_time_budget_s,
            browse_only_seen_urls=browse_only_seen_urls,
            backends=backend_names(),
            corpora=list_corpora(),
        )
        today = _options.parse_today(today)
        cache_path, record_path, replay_path = (
            None if p is None else os.fspath(p) for p in (cache_path, record_path, replay_path)
        )

        if services is not None and not isinstance(services, ToolServices):
            raise ConfigError(f"`services` must be a drgym.ToolServices or None, got {type(services).__name__}")
        self.records = _load_records(dataset, data_source=data_source, limit=limit)
        self.dataset_name = dataset if isinstance(dataset, str) else "custom"
        self.corpus = corpus or ("demo" if self.dataset_name == "demo" else "wiki-local")
        self._owns_services = services is None
        self.services = services if services is not None else ToolServices()
        self._closed = False
        self._episode: _Episode | None = None
        try:
            self.backend = self._make_search(search, search_kwargs, search_budget_per_episode, search_budget_global,
                                             cache_path, cache_mode, record_path, replay_path)
            self.reader = _make_reader(reader)
        except BaseException:
            self.close()
            raise
        self._stores = self.backend.stores() if isinstance(self.backend, SearchLayer) else []
        # Behind a gateway, pages are opened and read there unless the env names its own reader.
        self._gateway_reads = isinstance(self.backend, GatewayBackend) and reader is None
        self.max_pages_per_call = max_pages_per_call
        self.browse_time_budget_s = browse_time_budget_s
        self.max_turns = max_turns
        self.results_per_query = results_per_query
        self.max_queries_per_call = max_queries_per_call
        self.reward_mode = reward_mode
        self.browse_only_seen_urls = browse_only_seen_urls
        self.on_format_error = on_format_error
        self.max_action_chars = max_action_chars
        self.max_observation_chars = max_observation_chars
        self.today = today
        self.render_mode = render_mode

        self.action_space = UnicodeText(max_action_chars)
        self.observation_space = UnicodeText(max_observation_chars)
        self.protocol = protocol
        self._mode = make_mode(protocol)  # None: drgym's own protocol
        self._text_protocol = self._mode or _default_protocol
        self._system_prompt = self._text_protocol.system_prompt(today if today is not None else _dt.date.today())

    def _make_search(
        self,
        search: str | Sequence[str] | SearchBackend,
        search_kwargs: Mapping[str, Any] | None,
        budget_per_episode: int | None,
        budget_global: int | None,
        cache_path: str | None,
        cache_mode: str | None,
        record_path: str | None,
        replay_path: str | None,
    ) -> SearchBackend:
        """The env's search backend: the stack for these options from ``services`` (shared with equal envs)."""
        if not isinstance(search, SearchBackend) and (not isinstance(search, (str, Sequence)) or not search):
            raise ConfigError(f"`search` must be a backend name, a list of names or a SearchBackend, got {search!r}")
        config = SearchConfig(
            search=search if isinstance(search, (str, SearchBackend)) else tuple(search),
            corpus=self.corpus,
            search_kwargs=dict(search_kwargs or {}),
            budget_per_episode=budget_per_episode,
            budget_global=budget_global,
            cache_path=cache_path,
            cache_mode=cache_mode,
            record_path=record_path,
            replay_path=replay_path,
        )
        if isinstance(search, GatewayBackend) or (isinstance(search, str) and search.startswith("gateway:")):
            return _gateway(search, config, self.services)
        if isinstance(search, SearchBackend):
            layered = (record_path, replay_path, cache_path, budget_per_episode, budget_global)
            if all(v is None for v in layered):
                return search  # the caller's backend as it is (the caller closes it)
        return self.services.stack(config)

    # ------------------------------------------------------------------ sync API (Gymnasium)
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode: ``options={"index": i}`` or ``{"question": q, "answers": [...]}``, else a seeded draw."""
        super().reset(seed=seed)
        return self._begin(options)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play the policy's turn (see the module docstring); a tool runs on this thread's loop of ``services``."""
        ep, parsed = self._accept(action)
        outcome = self._react(ep, parsed)
        if outcome is None:  # only a tool call needs the event loop; answers and errors are plain computation
            assert parsed.tool_call is not None
            content, error = self.services.run(self._run_tool(ep, parsed.tool_call))
            outcome = content, False, error
        return self._conclude(ep, parsed, *outcome)

    # ------------------------------------------------------------------ async API
    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The same as ``reset``; reset does no I/O, so this only exists for symmetry in async code."""
        return self.reset(seed=seed, options=options)

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """The same as ``step``, on the caller's event loop (many episodes can share one loop)."""
        ep, parsed = self._accept(action)
        outcome = self._react(ep, parsed)
        if outcome is None:
            assert parsed.tool_call is not None
            content, error = await self._run_tool(ep, parsed.tool_call)
            outcome = content, False, error
        return self._conclude(ep, parsed, *outcome)

    # ------------------------------------------------------------------ one turn, in three parts
    def _accept(self, action: str) -> tuple[_Episode, protocol.ParsedTurn]:
        """Check and parse the policy's turn and add it to the conversation."""
        ep = self._episode
        if ep is None or ep.done:
            raise ResetNeeded("Cannot call `step()` before `reset()` or after the episode ended; call `reset()`.")
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        if not isinstance(action, str):
            raise TypeError(f"the action must be the policy's turn as a str, got {type(action).__name__}")

        ep.turn += 1
        if self._mode is not None:
            action = self._mode.prepare_action(action)
        parsed = (self._mode or protocol).parse_turn(action, max_chars=self.max_action_chars)
        # Keep the turn only up to its action's closing tag, where a model with stop strings would have
        # stopped: a forged <tool_response> written after a tool call never enters the context.
        if parsed.action_end is not None:
            action = action[: parsed.action_end]
        # A turn over the limit is kept one character over it, so that the record is still the too-long turn
        # the env rejected (score_episode with the same max_chars rejects it too).
        ep.messages.append({"role": "assistant", "content": action[: self.max_action_chars + 1]})
        return ep, parsed

    def _react(self, ep: _Episode, parsed: protocol.ParsedTurn) -> tuple[str, bool, str | None] | None:
        """The outcome ``(content, terminated, error)`` of a turn that calls no tool; None for a tool call."""
        kind = parsed.kind
        if kind == "tool_call":
            ep.tool_calls += 1
            return None
        if kind == "answer":
            ep.answer = parsed.answer
            return "", True, None
        if kind == "tool_error":
            ep.tool_errors += 1
            return protocol.render_error(parsed.error or "the tool call is invalid"), False, parsed.error
        ep.format_errors += 1
        if self.on_format_error == "end":
            ep.format_problem = f"turn {ep.turn}: {parsed.error or 'the turn broke the format'}"
            return protocol.render_error(parsed.error or "the turn broke the format"), True, parsed.error
        message = f"{parsed.error} This turn was not accepted; reply again in the required format."
        return protocol.render_error(message), False, parsed.error

    def _conclude(
        self, ep: _Episode, parsed: protocol.ParsedTurn, content: str, terminated: bool, error: str | None
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score the episode if it ends here, and build the step's observation and info."""
        reward = 0.0
        truncated = not terminated and ep.turn >= self.max_turns
        score: Score | None = None
        if terminated or truncated:
            # Every scored turn was parsed once already; the verdict collected on the way is the paper's format
            # rule (tests check it equals ``score_episode`` on the policy's turns), so nothing is parsed again.
            problem = ep.format_problem or (None if ep.answer is not None else "no turn ends with an <answer>")
            if ep.record.answers:
                score = score_answer(
                    ep.answer, ep.record.answers, self.reward_mode, format_ok=problem is None, reason=problem
                )
            else:  # a reset(options={"question": ...}) without answers: played, not scored
                score = Score(0.0, 0.0, 0.0, 0.0, 0.0, problem is None, ep.answer, problem)
            reward = float(score.reward)
            ep.done = True
            ep.memory.clear()

        observation = self._observe(ep, content, final=terminated)
        info = self._step_info(ep, parsed, error, score)
        if self.render_mode == "human":
            print(self._transcript())
        return observation, reward, terminated, truncated, info

    # ------------------------------------------------------------------ tools
    async def _run_tool(self, ep: _Episode, call: protocol.ToolCall) -> tuple[str, str | None]:
        """Run one tool call; infrastructure failures become the observation, never an exception."""
        try:
            if call.name == "web_search":
                return await self._web_search(ep, list(call.arguments["query"])), None
            return await self._browse(ep, list(call.arguments["url_list"])), None
        except BudgetExceededError as exc:
            ep.budget_errors += 1
            return (self._mode or protocol).render_error(str(exc)), str(exc)
        except DrgymError as exc:  # tool and infrastructure failures alike become the observation
            ep.backend_errors += 1
            return (self._mode or protocol).render_error(str(exc)), str(exc)
        except Exception as exc:
            logger.exception("search backend %s failed unexpectedly", getattr(self.backend, "name", "?"))
            ep.backend_errors += 1
            message = f"the tool failed unexpectedly ({type(exc).__name__}); try again or answer"
            return (self._mode or protocol).render_error(message), message

    async def _web_search(self, ep: _Episode, queries: list[str]) -> str:
        used = [q for q in dict.fromkeys(q.strip() for q in queries) if q][: self.max_queries_per_call]
        ep.search_calls += len(used)
        started = time.perf_counter()
        outcomes = await _gather_outcomes([ep.search.search(q, self.results_per_query) for q in used])
        ep.backend_time_s += time.perf_counter() - started
        per_query: list[tuple[str, Sequence[Result]]] = []
        failures: list[str] = []
        for query, outcome in zip(used, outcomes):
            if isinstance(outcome, BudgetExceededError):
                ep.budget_errors += 1
                failures.append(f'search for "{query}" not run: {outcome}')
                continue
            if isinstance(outcome, DrgymError):
                ep.backend_errors += 1
                failures.append(f'search for "{query}" failed: {outcome}')
                continue
            if isinstance(outcome, BaseException):
                raise outcome  # handled by _run_tool
            per_query.append((query, outcome))
        if per_query and self._mode is not None and self._mode.browse_last_search_only:
            ep.seen_urls.clear()  # the original browses the URLs of the last search only
        for query, outcome in per_query:
            for result in outcome:
                ep.seen_urls.setdefault(result.url, query)
        if self._mode is not None:
            return self._mode.search_observation(per_query) if per_query else self._mode.render_error("")
        text = protocol.render_search_results(per_query) if per_query else ""
        if failures:
            text = "\n".join(filter(None, [text, *(protocol.render_error(f) for f in failures)]))
        return text

    async def _browse(self, ep: _Episode, urls: list[str]) -> str:
        urls = list(dict.fromkeys(u.strip() for u in urls if u.strip()))
        notes: list[str] = []
        if self.browse_only_seen_urls:
            unseen = [u for u in urls if u not in ep.seen_urls]
            urls = [u for u in urls if u in ep.seen_urls]
            if unseen:
                notes.append(
                    "Skipped URLs that did not appear in this episode's search results "
                    f"(search first, then browse a result's URL): {', '.join(unseen[:10])}"
                )
        pages: list[dict[str, Any]] = []
        if urls:
            started = time.perf_counter()
            read = await ep.browser.browse(
                urls, question=ep.record.question, subquestions=ep.seen_urls, memory=ep.memory
            )
            ep.backend_time_s += time.perf_counter() - started
            ep.pages_read += sum(1 for p in read if p.error is None)
            pages = [p.to_dict() for p in read]
        if self._mode is not None:  # the original left out URLs it did not read, without a note
            return self._mode.browse_observation(pages) if pages else self._mode.render_error("")
        text = protocol.render_browse_results(pages) if pages else ""
        return "\n".join(filter(None, [text, *(protocol.render_error(n) for n in notes)])) or protocol.render_error(
            "no URL to read; pass URLs from this episode's search results in `url_list`"
        )

    # ------------------------------------------------------------------ episode bookkeeping
    def _begin(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        record = self._choose(options or {})
        question = fit_text(record.question, self.max_observation_chars)
        messages = [
            {"role": "system", "content": self._system_prompt},
            {"role": "user", "content": question},
        ]
        # The episode's identity (record key, counts, per-episode budget) goes with every call it makes.
        if isinstance(self.backend, GatewayBackend):
            view: Any = self.backend.episode_view(record.id)
        else:
            view = EpisodeView(self.backend, Episode(record_id=record.id))
        if self._gateway_reads:
            browser: Any = self.backend.browser(
                view, max_pages_per_call=self.max_pages_per_call, time_budget_s=self.browse_time_budget_s
            )
        else:
            browser = Browser(
                view, self.reader, max_pages_per_call=self.max_pages_per_call, time_budget_s=self.browse_time_budget_s
            )
        self._episode = _Episode(record=record, messages=messages, memory=EpisodeMemory(), search=view, browser=browser)
        info = {
            "system_prompt": self._system_prompt,
            "tools": self._text_protocol.tool_schemas(),  # a fresh copy per reset
            "messages": [dict(m) for m in messages],
            "question": record.question,
            "record_id": record.id,
            "source": record.source,
            "turn": 0,
            "max_turns": self.max_turns,
            "corpus": self.corpus,
        }
        if self._mode is not None:
            info["generation_prefix"] = self._mode.generation_prefix  # start every assistant turn with it
        return question, info

    def _choose(self, options: Mapping[str, Any]) -> QARecord:
        unknown = set(options) - {"index", "question", "answers", "id", "source"}
        if unknown:
            raise ConfigError(
                f"unknown reset option(s) {sorted(unknown)}; use {{'index': i}} or "
                "{'question': ..., 'answers': [...]}"
            )
        if "question" in options:
            question = options["question"]
            if not isinstance(question, str) or not question.strip():
                raise ConfigError("reset option `question` must be a non-empty string")
            answers = split_gold(options.get("answers") or [])
            return QARecord(
                question=question.strip(),
                answers=answers,
                source=str(options.get("source", "custom")),
                id=str(options.get("id", "custom")),
            )
        if "index" in options:
            index = options["index"]
            if not isinstance(index, int) or isinstance(index, bool) or not -len(self.records) <= index < len(
                self.records
            ):
                raise ConfigError(f"reset option `index` must be an int in [0, {len(self.records)}), got {index!r}")
            return self.records[index]
        return self.records[int(self.np_random.integers(len(self.records)))]

    def _observe(self, ep: _Episode, content: str, *, final: bool) -> str:
        content, observation = fit_tool_response(content, self.max_observation_chars)
        if not final or content:
            ep.messages.append({"role": "tool", "content": content})
        return observation if content else ""

    def _step_info(
        self, ep: _Episode, parsed: protocol.ParsedTurn, error: str | None, score: Score | None
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "action": parsed.to_info(),
            "format_ok": parsed.format_ok,
            "error": error,
            "turn": ep.turn,
            "tool_calls": ep.tool_calls,
            "search_calls": ep.search_calls,
            "pages_read": ep.pages_read,
            "format_errors": ep.format_errors,
            "tool_errors": ep.tool_errors,
            "backend_errors": ep.backend_errors,
            "budget_errors": ep.budget_errors,
            "messages": [dict(m) for m in ep.messages],  # fresh dicts of immutable strings: safe to keep
            "search_usage": dict(vars(ep.search.usage)),
            "store_degraded": next((s.degraded for s in self._stores if s.degraded is not None), None),
        }
        if score is not None:
            info.update(
                scored=bool(ep.record.answers),
                f1=score.f1,
                em=score.em,
                reward=score.reward,
                answer=score.answer,
                answers=list(ep.record.answers),
                score=score.to_dict(),
            )
        return info

    # ------------------------------------------------------------------ gymnasium extras
    def render(self) -> str | None:
        """``ansi``: the transcript so far as text; ``human``: print it (and return ``None``)."""
        if self.render_mode == "ansi":
            return self._transcript()
        if self.render_mode == "human":
            print(self._transcript())
        return None

    def _transcript(self) -> str:
        if self._episode is None:
            return ""
        return "\n".join(f"[{m['role']}] {m['content']}" for m in self._episode.messages[1:])

    @property
    def backend_time_s(self) -> float:
        """Seconds this episode has spent inside the search backend and the page reader (rendering excluded).

        Kept out of ``info`` on purpose: wall-clock time differs between two identical seeded steps, and
        ``info`` must be deterministic for Gymnasium's ``check_env``.
        """
        return self._episode.backend_time_s if self._episode is not None else 0.0

    def close(self) -> None:
        """Drop the episode and close the env's own ``services`` (if it made them); given ones stay open."""
        if self._episode is not None:
            self._episode.memory.clear()
        self._episode = None
        if not self._closed and self._owns_services:
            self.services.close()  # inside a running loop: as soon as that loop gets to it
        self._closed = True
        super().close()

    async def aclose(self) -> None:
        """``close()`` on the running loop: the env's own services are closed before this returns."""
        if not self._closed and self._owns_services:
            self._closed = True
            await self.services.aclose()
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "WebResearchEnv holds network sessions and cannot be pickled; build one per process with "
            "gymnasium.make (AsyncVectorEnv does this for you)"
        )


async def _gather_outcomes(calls: list[Any]) -> list[Any]:
    """``gather(..., return_exceptions=True)``, without a task per call when there is only one."""
    if len(calls) == 1:
        try:
            return [await calls[0]]
        except Exception as exc:  # noqa: BLE001  (reported per query by the caller, as gather would)
            return [exc]
    return list(await asyncio.gather(*calls, return_exceptions=True))


def _make_reader(reader: Reader | ChatClient | str | None) -> Reader:
    if reader is None or reader == "lexical":
        return LexicalReader()
    if isinstance(reader, str):
        from drgym.llm import make_client

        return BrowsingAgent(make_client(reader))
    if isinstance(reader, ChatClient) and not hasattr(reader, "read"):
        return BrowsingAgent(reader)
    if not hasattr(reader, "read"):
        raise ConfigError(f"`reader` must be 'lexical', a Reader, a chat client or an LLM spec, got {reader!r}")
    return reader


def _load_records(
    dataset: str | Sequence[QARecord | Mapping[str, Any]],
    *,
    data_source: str | Sequence[str] | None,
    limit: int | None,
) -> list[QARecord]:
    if isinstance(dataset, str):
        from drgym.data import load_dataset

        records = list(load_dataset(dataset, data_source=data_source, limit=limit))
    else:
        records = [_as_record(r, i) for i, r in enumerate(dataset)]
        if data_source is not None:
            wanted = {data_source} if isinstance(data_source, str) else set(data_source)
            present = {r.source for r in records}
            unknown = sorted(wanted - present)
            if unknown:
                raise unknown_name_error("data_source of the given dataset", unknown[0], present)
            records = [r for r in records if r.source in wanted]
        if limit is not None:
            records = records[:limit]
    if not records:
        raise ConfigError(f"dataset {dataset if isinstance(dataset, str) else 'given'} has no records to pose")
    return records


def _as_record(item: QARecord | Mapping[str, Any], index: int) -> QARecord:
    """A dataset item as a record with usable gold answers; refused here, naming it, rather than at its last step."""
    if isinstance(item, QARecord):
        question, raw = item.question, item.answers
    elif isinstance(item, Mapping):
        question, raw = item.get("question"), item.get("answers", item.get("answer"))
    else:
        raise ConfigError(f"dataset item {index} must be a QARecord or a dict with a `question` str, got {item!r:.80}")
    try:
        answers = split_gold(raw if isinstance(raw, (str, list, tuple)) else [raw])
    except ConfigError as exc:
        raise ConfigError(f"dataset {describe_record(index, question, raw)}: {exc}") from None
    problem = record_problem(question, answers)
    if problem is not None:
        raise ConfigError(
            f"dataset {describe_record(index, question, raw)}: {problem}; give every record a non-empty "
            "`question` and at least one non-empty answer in `answers`"
        )
    if isinstance(item, QARecord):
        return item if answers == item.answers else dataclasses.replace(item, answers=answers)
    return QARecord(
        question=question.strip(),
        answers=answers,
        source=str(item.get("source", "custom")),
        id=str(item.get("id", index)),
    )


def _gateway(search: str | GatewayBackend, config: SearchConfig, services: ToolServices) -> GatewayBackend:
    """``search="gateway:URL"`` (or a ``GatewayBackend``): the store and the global budget live on the gateway."""
    stored = {"cache_path": config.cache_path, "cache_mode": config.cache_mode, "record_path": config.record_path,
              "replay_path": config.replay_path, "search_budget_global": config.budget_global}
    given = [name for name, value in stored.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot be set on an env behind a gateway: the gateway holds the store and the "
            f"global budget (drgym serve --cache-path F --cache-mode M --budget N)"
        )
    if isinstance(search, GatewayBackend):
        if config.budget_per_episode is not None or config.search_kwargs:
            raise ConfigError(
                "with a GatewayBackend instance, give its options (budget_per_episode, token, ...) to "
                "GatewayBackend(...), not to the env"
            )
        return search
    options = dict(config.search_kwargs)
    unknown = set(options) - {"token", "timeout_s", "retry", "connector_limit"}
    if unknown:
        raise ConfigError(
            f"search_kwargs {sorted(unknown)} are not gateway client options (token, timeout_s, retry, "
            f"connector_limit); backend options belong to drgym serve --search-kwargs"
        )
    return services.gateway(search[len("gateway:"):], budget_per_episode=config.budget_per_episode, **options)
