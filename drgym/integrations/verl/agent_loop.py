"""``DrgymAgentLoop``: a ``WebResearch-v0`` episode as one verl agent-loop rollout, token-in / token-out.

verl instantiates an agent loop per trajectory and awaits its ``run``; this one keeps the episode's env (its
search handle, browsing memory and seen URLs) for the whole trajectory and plays it through
``server_manager.generate``. The sequence is built as drgym's own GRPO trainer builds it (see
:class:`agents.grpo.rollout.ChatFormat`), never re-tokenised::

    prompt ids (system + user + generation prompt [+ forced prefix])       prompt_ids
    + sampled ids of turn 1                                                 mask 1, sampled logprobs
    + ids of the tool turn (+ next generation prompt [+ forced prefix])     mask 0, logprob 0.0
    + sampled ids of turn 2 ...                                             mask 1

The reward is the env's (so verl's reward manager is skipped for these rows); the metrics go to
``extra_fields["reward_extra_info"]``, which verl carries with each sample (validation metrics per data source,
rollout dumps). Unlike verl's ``ToolAgentLoop``, tool
results are not cut to a few hundred characters: the env's ``max_observation_chars`` bounds them.

Configuration: the agent-loop YAML entry's ``env`` mapping (``scripts/verl/agent_loop.yaml``), then the
trainer config's ``drgym.env`` (e.g. ``+drgym.env.search=gateway:http://HOST:PORT`` on the command line)
are passed to :class:`~drgym.env.WebResearchEnv`.

Sharing: every episode's env is given one :class:`~drgym.services.ToolServices` (one rate limit, budget, cache
and index per worker process). verl builds an agent loop per trajectory and gives it no per-worker object of
ours, so the worker's services are held by the class (:attr:`DrgymAgentLoop.services`, made on the first
episode, or set by the caller with :meth:`DrgymAgentLoop.use_services` before training); they live as long as
the worker. Several workers or nodes share limits only through one ``drgym serve`` gateway.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from drgym.env import WebResearchEnv
from drgym.errors import ConfigError
from drgym.integrations.verl.rows import record_from_row
from drgym.llm.token_turns import ChatFormat, failure_reward
from drgym.services import ToolServices

__all__ = ["DrgymAgentLoop"]

logger = logging.getLogger(__name__)

_METRIC_KEYS = ("tool_calls", "search_calls", "pages_read", "format_errors", "tool_errors", "backend_errors")


@register("drgym")
class DrgymAgentLoop(AgentLoopBase):
    """Plays one drgym episode per ``run`` (see the module docstring).

    Args:
        env: Keyword arguments of :class:`~drgym.env.WebResearchEnv` (``search``, ``corpus``, ``reader``,
            ``protocol``, ``max_turns``...); the trainer config's ``drgym.env`` entries override them.
        max_tokens_per_turn: Tokens one turn may generate at most (the paper: 2000); the rest of the response
            budget (``rollout.response_length``) bounds it too. The trainer config's
            ``drgym.max_tokens_per_turn`` overrides it.
        *args, **kwargs: What verl passes to every agent loop (and the YAML entry's ``name``).
    """

    services: ClassVar[ToolServices | None] = None
    """What the envs of this worker process share (see the module docstring)."""
    _services_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def use_services(cls, services: ToolServices | None) -> None:
        """Give every later episode of this process ``services`` (the caller closes them); ``None``: a new one."""
        with cls._services_lock:
            cls.services = services

    @classmethod
    def _worker_services(cls) -> ToolServices:
        with cls._services_lock:
            if cls.services is None or cls.services.closed:
                cls.services = ToolServices()
            return cls.services

    def __init__(
        self,
        *args: Any,
        env: Mapping[str, Any] | None = None,
        max_tokens_per_turn: int | None = None,
        tools: Any = None,
        **kwargs: Any,
    ):
        kwargs.pop("name", None)  # the YAML entry's own name, passed on by hydra.utils.instantiate
        super().__init__(*args, **kwargs)
        section = _drgym_section(self.config)
        self.env_kwargs = {**_plain(env or {}), **_plain(section.get("env") or {})}
        per_turn = section.get("max_tokens_per_turn", max_tokens_per_turn)
        if per_turn is not None and (not isinstance(per_turn, int) or isinstance(per_turn, bool) or per_turn < 1):
            raise ConfigError(f"`max_tokens_per_turn` must be a positive integer, got {per_turn!r}")
        self.max_tokens_per_turn = per_turn
        if "dataset" in self.env_kwargs:
            raise ConfigError("the drgym agent loop takes its questions from verl's data; drop `env.dataset`")
        self.response_length = int(self.rollout_config.response_length)
        self.chat = ChatFormat(self.tokenizer)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """Play the row's question to the end and return the whole trajectory."""
        record = record_from_row(kwargs)
        loop = asyncio.get_running_loop()
        # Building an env may load a search index the first time in a process: off the event loop.
        services = self._worker_services()
        env = await loop.run_in_executor(
            None, lambda: WebResearchEnv(dataset=[record], services=services, **self.env_kwargs)
        )
        try:
            return await self._play(env, dict(sampling_params))
        finally:
            env.close()  # the worker's services stay open for the next episodes

    async def _play(self, env: WebResearchEnv, sampling_params: dict[str, Any]) -> AgentLoopOutput:
        loop = asyncio.get_running_loop()
        _, info = await env.areset(options={"index": 0})
        prefix = str(info.get("generation_prefix") or "")
        prefix_ids = self.chat.encode(prefix) if prefix else []
        prompt_ids = await loop.run_in_executor(None, self.chat.prompt_ids, info["messages"])
        prompt_ids = self._cap_text_prompt_length(prompt_ids + prefix_ids)

        response_ids: list[int] = []
        mask: list[int] = []
        logprobs: list[float] = []
        with_logprobs = bool(sampling_params.get("logprobs", False))
        request_id = uuid4().hex
        generate_s = tool_s = 0.0
        assistant_turns = tool_turns = 0
        reward: float | None = None
        context_full = False

        while True:
            budget = self.response_length - len(response_ids)
            if budget <= 0:
                context_full = True
                break
            params = dict(sampling_params)
            params["max_tokens"] = min(self.max_tokens_per_turn or budget, budget)
            started = time.perf_counter()
            out = await self.server_manager.generate(
                request_id=request_id, prompt_ids=prompt_ids + response_ids, sampling_params=params
            )
            generate_s += time.perf_counter() - started
            ids = list(out.token_ids)
            if out.log_probs is None:
                if with_logprobs:  # zeros would silently corrupt the importance ratios
                    raise ConfigError("the rollout server returned no logprobs though `calculate_log_probs` is on")
                lps = [0.0] * len(ids)
            else:
                lps = list(out.log_probs)
            if len(lps) != len(ids):
                raise ConfigError(f"the rollout server returned {len(lps)} logprobs for {len(ids)} token ids")
            text = prefix + self.tokenizer.decode(ids, skip_special_tokens=True)

            started = time.perf_counter()
            _, step_reward, terminated, truncated, info = await env.astep(text)
            tool_s += time.perf_counter() - started
            assistant_turns += 1
            kept = _last_assistant(info["messages"])
            ids, lps = self._cut_to(ids, lps, prefix, len(kept))
            response_ids += ids
            mask += [1] * len(ids)
            logprobs += lps
            if terminated or truncated:
                reward = float(step_reward)
                break
            tool_ids = self.chat.tool_turn_ids(info["messages"][-1]["content"], ids[-1] if ids else None)
            tool_ids += prefix_ids
            tool_turns += 1
            if len(response_ids) + len(tool_ids) >= self.response_length:
                context_full = True  # no room to generate after this tool turn: the episode cannot answer
                response_ids += tool_ids
                mask += [0] * len(tool_ids)
                logprobs += [0.0] * len(tool_ids)
                break
            response_ids += tool_ids
            mask += [0] * len(tool_ids)
            logprobs += [0.0] * len(tool_ids)

        if reward is None:  # the response budget ran out before the episode ended: a trajectory with no answer
            reward = failure_reward(env.reward_mode)
        n = self.response_length
        extra = {name: float(info.get(name, 0)) for name in _METRIC_KEYS}
        extra.update(
            reward=reward,
            f1=float(info.get("f1", 0.0)),
            em=float(info.get("em", 0.0)),
            turns=float(assistant_turns),
            context_full=float(context_full),
        )
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:n],
            response_mask=mask[:n],
            response_logprobs=logprobs[:n] if with_logprobs else None,
            reward_score=reward,
            num_turns=1 + assistant_turns + tool_turns,
            metrics=AgentLoopMetrics(generate_sequences=generate_s, tool_calls=tool_s),
            extra_fields={
                "reward_extra_info": {f"drgym/{k}": v for k, v in extra.items()},
                "turn_scores": [],
                "tool_rewards": [],
            },
        )

    def _cut_to(
        self, ids: list[int], lps: list[float], prefix: str, kept_chars: int
    ) -> tuple[list[int], list[float]]:
        """The sampled ids up to where the env cut the turn (after its action's closing tag).

        Text after the action (an invented ``<tool_response>``, a second call) is not part of the conversation
        the env records, so its ids must not stay in the context. Whitespace and special tokens after the
        action (the EOS) are kept: they decode to nothing more.
        """
        full = prefix + self.tokenizer.decode(ids, skip_special_tokens=True)
        if len(full.rstrip()) <= kept_chars:
            return ids, lps
        lo, hi = 1, len(ids)  # smallest k whose text reaches the kept length
        while lo < hi:
            mid = (lo + hi) // 2
            if len(prefix + self.tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= kept_chars:
                hi = mid
            else:
                lo = mid + 1
        return ids[:lo], lps[:lo]


def _last_assistant(messages: Sequence[Mapping[str, Any]]) -> str:
    return next(str(m["content"]) for m in reversed(messages) if m.get("role") == "assistant")


def _drgym_section(config: Any) -> Mapping[str, Any]:
    """The trainer config's ``drgym`` entries (``+drgym.env.search=...`` on verl's command line), or {}."""
    section = config.get("drgym") if hasattr(config, "get") else None
    return _plain(section) if section is not None else {}


def _plain(value: Any) -> dict[str, Any]:
    """An OmegaConf mapping (or any mapping) as a plain dict of plain values."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            return dict(OmegaConf.to_container(value, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover (verl depends on omegaconf)
        pass
    if not isinstance(value, Mapping):
        raise ConfigError(f"the drgym agent loop's `env` must be a mapping of env options, got {value!r:.80}")
    return dict(value)
