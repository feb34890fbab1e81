"""``PromptAgent``: an untrained chat model playing the research protocol through prompting alone.

It is the Search-o1 / ReAct style baseline of the paper: the model sees the environment's own system prompt
(optionally with a worked example) and the conversation so far, and writes the next turn. The agent adds what
a careful harness adds around a model that was never trained on the protocol:

- generation stops at ``</tool_call>`` or ``</answer>``, and replies are repaired into the exact format
  (:mod:`agents.prompt_baseline.repair`); an unusable reply is asked for once more with a format reminder;
- on the last allowed turn the model is told to answer, so the episode ends with an answer, not a truncation;
- when the conversation outgrows the model's context, old tool results are dropped and the call retried once;
  if it still does not fit, the model answers from its own earlier reasoning alone;
- a model that fails (:class:`~drgym.errors.LLMError` after the client's retries) ends the episode with an
  answer turn that says so: the episode is scored, the batch goes on, and ``episode_stats`` counts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from drgym import protocol
from drgym.agent import BaseAgent
from drgym.errors import ConfigError, LLMError
from drgym.llm import ChatClient, Completion, ContextOverflowError

from .llm import close_client, resolve_llm, sampling_options
from .prompts import (
    ELIDED_OBSERVATION,
    FEW_SHOT_EXAMPLE,
    FINAL_ANSWER_INSTRUCTION,
    FORMAT_REMINDER,
)
from .repair import Repair, final_answer_turn, render_answer, repair_turn

__all__ = ["STOP", "PromptAgent", "TurnUsage", "call_llm"]

STOP = ("</tool_call>", "</answer>")
"""Stop strings: a turn ends with its action (servers that drop the stop string get it put back)."""

_TOOL_ROLES = ("user", "tool")
_MAX_REPLY_ECHO = 4000  # characters of an unusable reply shown back to the model with the format reminder


@dataclass
class TurnUsage:
    """Tokens and calls spent on one turn (several calls when a reply is retried or the context overflows)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    calls: int = 0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        if completion.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + completion.prompt_tokens
        if completion.tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + completion.tokens

    def as_dict(self) -> dict[str, int]:
        out = {"llm_calls": self.calls}
        if self.prompt_tokens is not None:
            out["prompt_tokens"] = self.prompt_tokens
        if self.completion_tokens is not None:
            out["completion_tokens"] = self.completion_tokens
        return out


async def call_llm(
    client: ChatClient, messages: list[dict[str, Any]], sampling: Mapping[str, Any], timeout_s: float | None
) -> Completion:
    """One chat completion, bounded by ``timeout_s`` (a client that never answers becomes an ``LLMError``)."""
    if timeout_s is None:
        return await client.complete(messages, **sampling)
    try:
        return await asyncio.wait_for(client.complete(messages, **sampling), timeout_s)
    except asyncio.TimeoutError as exc:
        raise LLMError(f"the language model gave no reply within {timeout_s:g} s") from exc


class PromptAgent(BaseAgent):
    """A prompt-engineered research agent over any chat model (see the module docstring).

    Args:
        llm: A :class:`~drgym.llm.ChatClient`, or a spec (``openai:URL``, ``hf:PATH``, ``vllm:NAME``,
            ``tiny``), from which the agent builds a client of its own (closed by ``aclose()``); agents that
            should share one client are given it.
        model: With a spec: the model name to request (``openai:``) or load (``hf:``/``vllm:``).
        few_shot: Append a worked example episode to the system prompt.
        temperature: Sampling temperature (the paper's browsing model used 0.6).
        max_tokens: Longest reply in tokens (the paper: 2000 per turn).
        top_p: Nucleus sampling mass; None leaves the server's default.
        seed: Sampling seed sent with every request (reproducible local models); None: the backend's choice.
        max_turns: Turns per episode, used when the environment's ``info`` does not state ``max_turns``; it
            must match the environment's limit for the last-turn answer to happen.
        tool_role: How tool results are sent: ``user`` (a user turn holding
            ``<tool_response>…</tool_response>``, which is how Qwen2.5's template renders tool turns anyway,
            and which every OpenAI-compatible API accepts) or ``tool`` (role ``tool``, for servers whose chat
            template handles it).
        format_retries: How many times an unusable reply is asked for again, with a format reminder.
        timeout_s: Upper bound on one model call (on top of the client's own timeouts); None: no extra bound.
        fallback_answer: The answer given when the model cannot produce one.
        llm_kwargs: Constructor arguments of a client built from a spec (e.g. ``{"max_concurrency": 256}``).
        sampling: Further sampling options sent with every request.
    """

    name = "prompt"
    env_options: ClassVar[dict[str, Any]] = {}
    run_options: ClassVar[tuple[str, ...]] = ("llm", "model")
    requires_one_of: ClassVar[tuple[str, ...]] = ("llm",)

    def __init__(
        self,
        llm: str | ChatClient | None = None,
        model: str | None = None,
        *,
        few_shot: bool = False,
        temperature: float = 0.6,
        max_tokens: int = 2000,
        top_p: float | None = None,
        seed: int | None = None,
        max_turns: int = 10,
        tool_role: str = "user",
        format_retries: int = 1,
        timeout_s: float | None = None,
        fallback_answer: str = "unknown",
        llm_kwargs: Mapping[str, Any] | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("max_tokens", max_tokens)
        _check_positive_int("max_turns", max_turns)
        if not isinstance(format_retries, int) or format_retries < 0:
            raise ConfigError(f"PromptAgent: format_retries must be an integer >= 0, got {format_retries!r}")
        if tool_role not in _TOOL_ROLES:
            raise ConfigError(f"PromptAgent: tool_role must be one of {_TOOL_ROLES}, got {tool_role!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigError(f"PromptAgent: timeout_s must be positive seconds or None, got {timeout_s!r}")
        self.client, self._owns_client = resolve_llm(llm, model, agent="PromptAgent", cli_name=self.name,
                                                     client_kwargs=llm_kwargs)
        self.few_shot = bool(few_shot)
        self.max_turns = max_turns
        self.tool_role = tool_role
        self.format_retries = format_retries
        self.timeout_s = timeout_s
        self.fallback_answer = fallback_answer
        self.sampling = sampling_options(
            temperature=temperature, max_tokens=max_tokens, stop=STOP, top_p=top_p, seed=seed, extra=sampling
        )
        self.last_repair: tuple[str, ...] = ()
        """What the repair changed in the last turn's reply (empty when it came out right)."""
        self.episode_stats: dict[str, Any] = _new_stats()
        """Counters of the current episode: calls, tokens, repairs, retries, overflows, model failures."""
        self._system = ""
        self._episode_max_turns = max_turns
        self._elided = 0

    def reset(self, question: str, info: dict[str, Any]) -> None:
        super().reset(question, info)
        system = info.get("system_prompt") or protocol.system_prompt()
        self._system = f"{system}\n\n{FEW_SHOT_EXAMPLE}" if self.few_shot else system
        stated = info.get("max_turns")
        self._episode_max_turns = stated if isinstance(stated, int) and stated > 0 else self.max_turns
        self._elided = 0
        self.last_repair = ()
        self.episode_stats = _new_stats()

    async def aclose(self) -> None:
        """Close the client the agent built from a spec; idempotent.

        A client object passed in as ``llm`` belongs to the caller and is left open.
        """
        if self._owns_client:
            self._owns_client = False
            await close_client(self.client)

    async def aact(self, observation: str, info: dict[str, Any]) -> str:
        turn = info.get("turn", 0)
        final = isinstance(turn, int) and turn + 1 >= self._episode_max_turns
        messages = self._conversation(info, final)
        usage = TurnUsage()
        try:
            text = await self._turn(messages, final, usage)
        except LLMError as exc:
            self.episode_stats["llm_errors"] += 1
            self.episode_stats["last_error"] = f"{type(exc).__name__}: {exc}"
            self.last_repair = ()
            text = render_answer(self.fallback_answer, f"The language model failed ({_short(exc)}).")
        self.last_usage = usage.as_dict()
        for key in ("prompt_tokens", "completion_tokens", "llm_calls"):
            self.episode_stats[key] += self.last_usage.get(key, 0)
        return text

    # -- one turn -------------------------------------------------------------------------------------------

    async def _turn(self, messages: list[dict[str, Any]], final: bool, usage: TurnUsage) -> str:
        reply = await self._complete(messages, usage)
        if reply is None:
            return await self._answer_with_what_it_has(messages, usage)
        repaired = self._repair(reply, final)
        for _ in range(self.format_retries):
            if repaired.ok:
                break
            self.episode_stats["format_retries"] += 1
            again = [*messages, {"role": "assistant", "content": reply[:_MAX_REPLY_ECHO]},
                     {"role": "user", "content": FORMAT_REMINDER}]
            retried = await self._complete(again, usage)
            if retried is None:
                break
            reply, repaired = retried, self._repair(retried, final)
        self.last_repair = repaired.fixes
        if repaired.ok and repaired.fixes:
            self.episode_stats["repairs"] += 1
        # Nothing usable even after the reminder: the reply goes to the environment as it is, which scores
        # the broken format (the honest outcome for a model that cannot follow the protocol).
        return repaired.text if repaired.text is not None else reply

    def _repair(self, reply: str, final: bool) -> Repair:
        return final_answer_turn(reply, default=self.fallback_answer) if final else repair_turn(reply)

    async def _complete(self, messages: list[dict[str, Any]], usage: TurnUsage) -> str | None:
        """The model's reply, or None when the conversation does not fit the model's context.

        After a context overflow, old tool results are dropped and the call is retried once.
        """
        while True:
            try:
                completion = await call_llm(self.client, self._wire(messages), self.sampling, self.timeout_s)
            except ContextOverflowError:
                if not self._elide_more(messages):
                    return None
                self.episode_stats["overflow_recoveries"] += 1
                continue
            usage.add(completion)
            return completion.text

    async def _answer_with_what_it_has(self, messages: list[dict[str, Any]], usage: TurnUsage) -> str:
        """Drop every tool result; the model answers from its own earlier turns, else the fallback does."""
        self.episode_stats["overflow_answers"] += 1
        self._elided = sum(1 for m in messages if m["role"] == "tool")
        if not any(m["content"] == FINAL_ANSWER_INSTRUCTION for m in messages):
            messages = [*messages, {"role": "user", "content": FINAL_ANSWER_INSTRUCTION}]
        try:
            completion = await call_llm(self.client, self._wire(messages), self.sampling, self.timeout_s)
        except ContextOverflowError:
            self.last_repair = ("the conversation does not fit the model's context",)
            return render_answer(self.fallback_answer, "The conversation no longer fits the model's context.")
        usage.add(completion)
        repaired = final_answer_turn(completion.text, default=self.fallback_answer)
        self.last_repair = repaired.fixes
        return repaired.text or render_answer(self.fallback_answer)

    # -- messages -------------------------------------------------------------------------------------------

    def _conversation(self, info: Mapping[str, Any], final: bool) -> list[dict[str, Any]]:
        """The environment's conversation (the source of truth), with this agent's system prompt."""
        history = info.get("messages")
        if not isinstance(history, Sequence) or not history:
            raise ConfigError(
                "PromptAgent needs info['messages'], the chat so far (drgym's WebResearch-v0 gives it)"
            )
        messages = [{"role": "system", "content": self._system}]
        messages += [
            {"role": m["role"], "content": m["content"]} for m in history if m.get("role") != "system"
        ]
        if final:
            messages.append({"role": "user", "content": FINAL_ANSWER_INSTRUCTION})
        return messages

    def _elide_more(self, messages: list[dict[str, Any]]) -> bool:
        """Drop every tool result but the newest; False when there is nothing more to drop this way."""
        tools = sum(1 for m in messages if m["role"] == "tool")
        if tools - 1 <= self._elided:
            return False
        self._elided = tools - 1  # stays dropped for the rest of the episode
        return True

    def _wire(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Messages as sent: old tool results elided, tool turns in the chosen role, user turns merged."""
        out: list[dict[str, Any]] = []
        seen_tools = 0
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "tool":
                seen_tools += 1
                if seen_tools <= self._elided:
                    content = ELIDED_OBSERVATION
                if self.tool_role == "user":
                    role, content = "user", protocol.wrap_tool_response(content)
            if out and role == "user" and out[-1]["role"] == "user":
                out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n\n{content}"}
            else:
                out.append({"role": role, "content": content})
        return out


def _new_stats() -> dict[str, Any]:
    return {
        "llm_calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "repairs": 0,
        "format_retries": 0,
        "overflow_recoveries": 0,
        "overflow_answers": 0,
        "llm_errors": 0,
        "last_error": None,
    }


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"PromptAgent: {name} must be a positive integer, got {value!r}")
