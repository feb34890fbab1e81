"""drgym inside TRL: ``WebResearch-v0`` episodes trained with ``trl.GRPOTrainer`` (extra ``[trl]``).

Two ways in, both on the real trainer:

* ``environment_factory=functools.partial(WebResearchToolEnv, dataset=..., search=..., services=shared)`` with
  ``reward_funcs=[finish_episodes]`` (``shared = drgym.ToolServices()``: the envs TRL builds share its rate
  limits, budget, cache and index; without it each env has its own). TRL generates, parses tool calls with its own chat-template parser and calls
  the env's tools (``web_search``, ``browse_webpage``); ``finish_episodes`` hands each env the policy's last turn
  (the answer) and ``get_reward`` returns the env's reward. TRL runs one sample's tools to completion before it
  starts the next sample's, so tool latency adds up over the batch (see README "Training with TRL").
* ``rollout_func=make_rollout_func(dataset=..., search=...)`` with ``reward_funcs=[rollout_reward]``. Whole
  episodes are played with drgym's exact protocol (the env's system prompt and messages, the tokenizer's chat
  template, tool turns as the template renders role ``tool``), all episodes of the batch at once on one event
  loop, token-in/token-out: the ids TRL trains on are the ids sampled, ``env_mask`` is 0 on every id the policy
  did not sample, and ``logprobs`` are the sampler's. The rollout makes one ``ToolServices`` for all its envs
  (or uses ``services=`` when given) and its ``close()`` closes it.

Importing this module checks the installed TRL version (:data:`SUPPORTED_TRL`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from drgym.errors import ConfigError
from drgym.integrations._trl_version import SUPPORTED_TRL, require_trl

require_trl()

import gymnasium

import drgym  # noqa: F401  (registers drgym/WebResearch-v0)
from drgym import protocol
from drgym.env import WebResearchEnv
from drgym.reward import score_answer, split_gold
from drgym.services import ToolServices

__all__ = [
    "STOP",
    "SUPPORTED_TRL",
    "DrgymRollout",
    "WebResearchToolEnv",
    "finish_episodes",
    "grpo_config",
    "make_dataset",
    "make_rollout_func",
    "rollout_reward",
]

logger = logging.getLogger(__name__)

STOP = ("</tool_call>", "</answer>")
"""Strings that end a policy turn besides EOS (the protocol's closing tags)."""

_GOLD_KEYS = ("answers", "answer", "golden_answers")


# ------------------------------------------------------------------------------------------ shared checks


def _make_env(env_kwargs: Mapping[str, Any]) -> WebResearchEnv:
    """A ``drgym/WebResearch-v0`` env (unwrapped: TRL calls its async API); unknown options named."""
    accepted = set(inspect.signature(WebResearchEnv.__init__).parameters) - {"self"}
    for name in env_kwargs:
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"unknown WebResearch-v0 option `{name}`{hint}")
    return gymnasium.make("drgym/WebResearch-v0", **env_kwargs).unwrapped


def _question_of(prompt: Any) -> str:
    """The question a TRL prompt poses: its last user message (conversational) or the text itself."""
    if isinstance(prompt, str):
        return prompt.strip()
    if isinstance(prompt, Sequence):
        for message in reversed(prompt):
            if isinstance(message, Mapping) and message.get("role") == "user":
                content = message.get("content")
                return content.strip() if isinstance(content, str) else ""
    return ""


def _record_index(env: WebResearchEnv) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, record in enumerate(env.records):
        index.setdefault(record.question.strip(), i)
    return index


# ---------------------------------------------------------------------------------- environment_factory


class WebResearchToolEnv:
    """One ``WebResearch-v0`` episode at a time, as an ``environment_factory`` class of ``trl.GRPOTrainer``.

    Its public methods are the env's two tools (TRL turns their signatures and docstrings into the tool
    schemas). Seen URLs, search budgets and the turn limit are the env's own. Use it with
    ``reward_funcs=[finish_episodes]``: TRL never shows an environment the policy's final turn, so that reward
    function hands it over before TRL calls :meth:`get_reward`.

    Args:
        **env_kwargs: Options of ``drgym/WebResearch-v0`` (``dataset``, ``search``, ``max_turns``, ...).

    Raises:
        ConfigError: An unknown option, or a dataset record without gold answers.
    """

    def __init__(self, **env_kwargs: Any) -> None:
        self.env = _make_env(env_kwargs)
        self._index = _record_index(self.env)
        self._golds: list[str] = []
        self._reward: float | None = None
        self._done = True
        self._ended_why = "no episode was started"

    def reset(self, **row: Any) -> str | None:
        """Pose the row's question; returns it when the row's prompt does not already hold it.

        A row gives its gold answers in ``answers`` (or ``answer``), or names a question of the env's dataset
        (``index``, or a prompt whose last user message is one of its questions). A row with an empty prompt
        (TRL's placeholder when there is no ``train_dataset``) gets a seeded draw from the env's dataset.

        Raises:
            ConfigError: The row has no usable gold answers.
        """
        options, in_prompt = self._options(row)
        question, _ = self.env.reset(options=options)
        self._golds = list(self.env.records[options["index"]].answers) if "index" in options else list(
            options.get("answers") or []
        )
        if not self._golds:  # a seeded draw: the record is the one the env just posed
            self._golds = list(self.env.records[self._index[question.strip()]].answers)
        self._reward, self._done, self._ended_why = None, False, ""
        return None if in_prompt else question

    async def web_search(self, query: list[str]) -> str:
        """Search the web. Returns, for each query, the top results with title, URL and snippet.

        Args:
            query: Search queries; up to 3 queries are used.
        """
        return await self._tool("web_search", {"query": query})

    async def browse_webpage(self, url_list: list[str]) -> str:
        """Read web pages and return the information on them that is relevant to the question.

        Args:
            url_list: URLs to read; only URLs from this episode's search results.
        """
        return await self._tool("browse_webpage", {"url_list": url_list})

    def get_reward(self) -> float:
        """The env's reward of the episode (``finish_episodes`` must have handed it the last turn).

        Raises:
            ConfigError: The episode never got its last turn (``finish_episodes`` is not a reward function).
        """
        if self._reward is None:
            raise ConfigError(
                "WebResearchToolEnv.get_reward: the episode never got the policy's last turn; pass "
                "reward_funcs=[drgym.integrations.trl.finish_episodes] to GRPOTrainer"
            )
        return self._reward

    # ------------------------------------------------------------------ internals (not tools: private)
    def _options(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        prompt_question = _question_of(row.get("prompt"))
        question = row.get("question") if isinstance(row.get("question"), str) else prompt_question
        question = question.strip()
        raw = next((row[k] for k in _GOLD_KEYS if row.get(k) not in (None, "", [])), None)
        if raw is None and isinstance(row.get("reward_model"), Mapping):  # DeepResearcher parquet rows
            raw = row["reward_model"].get("ground_truth")
        name = row.get("id", row.get("index", question[:60] or sorted(row)))
        in_prompt = bool(question) and question == prompt_question
        if raw is not None:
            try:
                golds = split_gold(raw)
            except ConfigError as exc:
                raise ConfigError(f"dataset row {name!r}: {exc}") from exc
            if not golds:
                raise ConfigError(f"dataset row {name!r} has no usable gold answers in its answers: {raw!r}")
            if not question:
                raise ConfigError(f"dataset row {name!r} has answers but no question (`question` or `prompt`)")
            return {"question": question, "answers": golds, "id": str(name)}, in_prompt
        if "index" in row:
            return {"index": row["index"]}, in_prompt
        if question in self._index:
            return {"index": self._index[question]}, in_prompt
        if not question:
            return {}, False
        raise ConfigError(
            f"dataset row {name!r} has no gold answers (`answers`) and its question is not in the env's "
            "dataset; give each row its answers, or build the dataset with drgym.integrations.trl.make_dataset"
        )

    async def _tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Run one tool call as an env step; any failure is a message to the policy, never an exception."""
        if self._done:
            return f"Error: the episode has ended ({self._ended_why}); no tool runs after that. Give your answer."
        action = "<tool_call>" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        try:
            _, reward, terminated, truncated, info = await self.env.astep(action + "</tool_call>")
        except Exception as exc:  # noqa: BLE001  (an env bug must not crash the trainer: tell the policy)
            logger.warning("%s failed inside the env: %s: %s", name, type(exc).__name__, exc)
            return f"Error: the {name} tool failed ({type(exc).__name__}: {exc}); try again or answer."
        last = info["messages"][-1]
        content = last["content"] if last["role"] == "tool" else ""
        if terminated or truncated:
            self._done, self._reward = True, float(reward)
            self._ended_why = "the turn limit was reached" if truncated else "the turn broke the format"
            content += f"\n[{self._ended_why}: the episode has ended]"
        return content

    def _finish(self, completion: Any) -> None:
        """Play the policy's last turn (its answer); an episode the trainer cut before an answer scores as one
        without an answer, as the env scores a truncated episode."""
        if self._done:
            return
        self._done, self._ended_why = True, "the policy answered"
        text = _final_turn(completion)
        if text is not None and protocol.parse_turn(text, max_chars=self.env.max_action_chars).kind in (
            "answer",
            "format_error",
        ):
            try:
                _, reward, terminated, truncated, _ = self.env.step(text)  # no tool: no event loop needed
            except Exception as exc:  # noqa: BLE001
                logger.warning("the final turn failed inside the env: %s: %s", type(exc).__name__, exc)
            else:
                if terminated or truncated:
                    self._reward = float(reward)
                    return
        why = "the trainer ended the episode before an answer"
        self._reward = score_answer(None, self._golds, self.env.reward_mode, format_ok=False, reason=why).reward


def _final_turn(completion: Any) -> str | None:
    """The text of the policy's last turn, rebuilt from TRL's parsed message; None when the last message is
    a tool result or a tool call TRL did not run (its iteration or length limit)."""
    if isinstance(completion, str):
        return completion
    if not completion or not isinstance(completion[-1], Mapping):
        return None
    message = completion[-1]
    if message.get("role") != "assistant" or message.get("tool_calls"):
        return None
    text = message.get("content") or ""
    text = text if isinstance(text, str) else ""
    reasoning = message.get("reasoning_content")
    return f"<think>{reasoning}</think>{text}" if reasoning else text


def finish_episodes(completions: list[Any], environments: list[Any] | None = None, **kwargs: Any) -> list[None]:
    """TRL reward function that scores nothing itself: it hands each ``WebResearchToolEnv`` the policy's last
    turn, so that the env's ``get_reward`` (which TRL adds as a reward column) scores the whole episode.

    It returns ``None`` for every completion (TRL leaves ``None`` out of the reward sum); list it before any
    other reward function.

    Raises:
        ConfigError: The trainer has no ``environment_factory``.
    """
    if environments is None:
        raise ConfigError(
            "finish_episodes needs GRPOTrainer(environment_factory=WebResearchToolEnv...); with rollout_func "
            "use rollout_reward"
        )
    for env, completion in zip(environments, completions):
        if isinstance(env, WebResearchToolEnv):
            env._finish(completion)
    return [None] * len(completions)


# ----------------------------------------------------------------------------------------- rollout_func


class DrgymRollout:
    """TRL's ``rollout_func``: ``rollout(prompts, trainer) -> dict`` (see :func:`make_rollout_func`).

    Attributes:
        times: Seconds spent sampling and in the envs (``times.reset()`` to start counting again).
        episodes: The last batch's episodes (ids, masks, turns, rewards), for inspection.
    """

    def __init__(
        self,
        env_kwargs: Mapping[str, Any],
        *,
        system_prompt: str | None = None,
        generator: Any = None,
        max_turn_tokens: int | None = None,
    ) -> None:
        from drgym.integrations._trl_rollout import RolloutTimes

        if max_turn_tokens is not None and (not isinstance(max_turn_tokens, int) or max_turn_tokens < 1):
            raise ConfigError(f"`max_turn_tokens` must be a positive integer or None, got {max_turn_tokens!r}")
        self.max_turn_tokens = max_turn_tokens
        self.system_prompt = system_prompt
        self.generator = generator
        self.env_kwargs = dict(env_kwargs)
        given = self.env_kwargs.get("services")
        self._owns_services = given is None
        self.services: ToolServices = given if given is not None else ToolServices()
        self.env_kwargs["services"] = self.services  # every env of the rollout shares it
        self.envs = [_make_env(self.env_kwargs)]
        self.records = self.envs[0].records
        self._index = _record_index(self.envs[0])
        self.times = RolloutTimes()
        self.episodes: list[Any] = []
        self.record_indices: list[int] = []
        """The dataset record each of the last batch's episodes posed."""
        self._calls = 0
        self._salt_step = -1
        self._formats: dict[int, Any] = {}

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        from drgym.integrations._trl_rollout import TurnLimits, play_episodes

        indices = [self._pose(p) for p in prompts]
        while len(self.envs) < len(prompts):
            self.envs.append(_make_env(self.env_kwargs))
        tokenizer = trainer.processing_class
        fmt = self._format(tokenizer)
        args = trainer.args
        limits = TurnLimits(
            max_completion_length=int(args.max_completion_length),
            max_context=int(trainer.model.config.max_position_embeddings),
            max_turn_tokens=self.max_turn_tokens,
            temperature=float(args.temperature),
            top_p=float(args.top_p),
            top_k=int(args.top_k or 0),
            seed=int(args.seed),
            reward_mode=self.envs[0].reward_mode,
        )
        salt = self._salt(trainer)
        with self._generator(trainer, tokenizer) as generator:
            episodes = self.services.run(
                play_episodes(
                    self.envs[: len(prompts)],
                    [{"index": i} for i in indices],
                    [self.records[i].answers for i in indices],
                    generator,
                    fmt,
                    limits,
                    salt=salt,
                    times=self.times,
                )
            )
        self.episodes, self.record_indices = episodes, indices
        return {
            "prompt_ids": [ep.prompt_ids for ep in episodes],
            "completion_ids": [ep.completion_ids for ep in episodes],
            "logprobs": [ep.logprobs for ep in episodes],
            "env_mask": [ep.env_mask for ep in episodes],
            "drgym_reward": [ep.reward for ep in episodes],
            "drgym_f1": [ep.f1 for ep in episodes],
            "drgym_format_ok": [ep.format_ok for ep in episodes],
            "drgym_tool_calls": [ep.tool_calls for ep in episodes],
        }

    def close(self) -> None:
        """Close the rollout's envs and the services it made (given ones stay open)."""
        for env in self.envs:
            env.close()
        self.envs = []
        if self._owns_services:
            self.services.close()

    def _salt(self, trainer: Any) -> int:
        """Seeds this batch's sampling from the trainer's step (and the batches already played at that step),
        so a run resumed from a checkpoint samples what the uninterrupted run would have."""
        state = getattr(trainer, "state", None)
        step = int(getattr(state, "global_step", 0) or 0)
        self._calls = self._calls + 1 if step == self._salt_step else 1
        self._salt_step = step
        return step * 1_009 + self._calls

    def _pose(self, prompt: Any) -> int:
        question = _question_of(prompt)
        if question in self._index:
            return self._index[question]
        close = difflib.get_close_matches(question, list(self._index), n=1)
        hint = f"; the closest is {close[0][:80]!r}" if close else ""
        raise ConfigError(
            f"prompt {question[:80]!r} is not a question of the rollout's dataset{hint}; build the trainer's "
            "train_dataset with drgym.integrations.trl.make_dataset over the same records"
        )

    def _format(self, tokenizer: Any) -> Any:
        from drgym.llm.token_turns import ChatFormat

        key = id(tokenizer)
        if key not in self._formats:
            self._formats = {key: ChatFormat(tokenizer, system_prompt=self.system_prompt)}
        return self._formats[key]

    @contextlib.contextmanager
    def _generator(self, trainer: Any, tokenizer: Any) -> Iterator[Any]:
        """The given generator, else the trainer's vLLM engine when it has one, else its own model."""
        if self.generator is not None:
            yield self.generator
            return
        if getattr(trainer, "use_vllm", False):
            from drgym.integrations._trl_rollout import VLLMTurnGenerator

            if trainer.vllm_mode == "server" and trainer.accelerator.num_processes > 1:
                raise ConfigError(
                    "make_rollout_func with vllm_mode='server' runs on one training process only (each turn "
                    "would need the same number of server calls on every process); use vllm_mode='colocate'"
                )
            if trainer.vllm_mode == "colocate" and int(getattr(trainer.args, "vllm_tensor_parallel_size", 1)) > 1:
                raise ConfigError(
                    "make_rollout_func with vllm_mode='colocate' needs vllm_tensor_parallel_size=1 (a tensor-parallel "
                    "group gathers every rank's prompts at each call, and episodes end after different numbers of "
                    "turns); use one engine per GPU"
                )
            yield VLLMTurnGenerator(trainer.vllm_generation, tokenizer, STOP)
            return
        from trl.models import unwrap_model_for_generation

        from drgym.llm.token_turns import HFGenerator

        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
        ) as model:
            yield HFGenerator(model, tokenizer, stop=STOP)


def make_rollout_func(
    *,
    system_prompt: str | None = None,
    generator: Any = None,
    max_turn_tokens: int | None = None,
    **env_kwargs: Any,
) -> DrgymRollout:
    """A ``rollout_func`` for ``trl.GRPOTrainer`` that plays whole ``WebResearch-v0`` episodes.

    The trainer's prompts must be questions of the env's dataset (build ``train_dataset`` with
    :func:`make_dataset` over the same options). Sampling follows the trainer's ``GRPOConfig``
    (``temperature``, ``top_p``, ``top_k``, ``seed``); ``max_completion_length`` bounds a whole episode's
    completion (sampled and tool tokens), as in TRL's own tool loop. Generation uses the trainer's vLLM engine
    when ``use_vllm`` is set, else the training model itself. Pass ``reward_funcs=[rollout_reward]``.

    Args:
        system_prompt: Replaces the env's system prompt (``None``: the env's own, the paper's protocol).
        generator: Samples the turns instead of the trainer (an ``agents.grpo.rollout.Generator``, e.g. a
            client of a separate inference server); ``None``: the trainer's vLLM engine or model.
        max_turn_tokens: New tokens one turn may sample at most (``None``: what is left of the episode's
            ``max_completion_length``).
        **env_kwargs: Options of ``drgym/WebResearch-v0`` (``dataset``, ``search``, ``max_turns``, ...).

    Raises:
        ConfigError: An unknown option, or a dataset record without gold answers.
    """
    return DrgymRollout(
        env_kwargs, system_prompt=system_prompt, generator=generator, max_turn_tokens=max_turn_tokens
    )


def rollout_reward(completions: list[Any], drgym_reward: list[float] | None = None, **kwargs: Any) -> list[float]:
    """TRL reward function of the ``rollout_func`` path: the env's reward of each episode.

    Raises:
        ConfigError: The rollout did not come from :func:`make_rollout_func`.
    """
    if drgym_reward is None:
        raise ConfigError("rollout_reward reads the env's rewards of GRPOTrainer(rollout_func=make_rollout_func(...))")
    return [float(r) for r in drgym_reward]


# ----------------------------------------------------------------------------------------------- helpers


def make_dataset(*, system_prompt: str | None = None, **env_kwargs: Any) -> Any:
    """The env's questions as a TRL ``train_dataset`` (``datasets.Dataset``).

    Each row holds ``prompt`` (the env's system prompt, or ``system_prompt``, and the question, as chat
    messages), ``question``, ``answers`` and ``id``: the same rows serve ``environment_factory`` and
    ``rollout_func`` (which renders its own prompt from the env and reads only the question).

    Raises:
        ConfigError: An unknown option, or a record without gold answers.
    """
    from datasets import Dataset

    env = _make_env(env_kwargs)
    system = system_prompt if system_prompt is not None else env.reset(options={"index": 0})[1]["system_prompt"]
    rows = [
        {
            "prompt": [{"role": "system", "content": system}, {"role": "user", "content": r.question}],
            "question": r.question,
            "answers": list(r.answers),
            "id": r.id,
        }
        for r in env.records
    ]
    env.close()
    return Dataset.from_list(rows)


def grpo_config(**fields: Any) -> Any:
    """``trl.GRPOConfig(**fields)``, with an unknown field named and the nearest known one suggested.

    Raises:
        ConfigError: A field ``GRPOConfig`` does not have.
    """
    from trl import GRPOConfig

    known = sorted(f.name for f in dataclasses.fields(GRPOConfig) if f.init)
    for name in fields:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"unknown GRPOConfig field `{name}` (trl {SUPPORTED_TRL}){hint}")
    return GRPOConfig(**fields)
