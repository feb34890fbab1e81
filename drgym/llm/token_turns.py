"""Token-in/token-out turns of a chat policy: the exact ids of prompts, sampled turns and tool turns.

Trainers that play ``WebResearch-v0`` episodes with a local policy (the bundled GRPO agent, the TRL and verl
adapters) build an episode's sequence incrementally, never re-tokenising it, so the ids trained on are the ids
sampled: :class:`ChatFormat` renders the template's prompt and tool-turn ids, a :class:`Generator` samples the
policy's turns as :class:`Sample` s (:class:`HFGenerator` with a transformers model), and :func:`sample_seed`
derives resumable per-turn seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from drgym.errors import ConfigError
from drgym.llm.decode import DecodeRow, decode
from drgym.llm.local import CHATML_TEMPLATE, truncate_at_stop

__all__ = ["ChatFormat", "Generator", "HFGenerator", "Sample", "failure_reward", "sample_seed"]

_MARK_A = "\u2063DRGYM-ASSISTANT\u2063"
_MARK_T = "\u2063DRGYM-TOOL\u2063"


# ------------------------------------------------------------------------------------------- chat format


class ChatFormat:
    """Token ids of the pieces of a conversation, rendered by the tokenizer's chat template.

    Args:
        tokenizer: A ``transformers`` tokenizer.
        chat_template: Replaces the tokenizer's template (default: its own, else Qwen2.5-style ChatML).
        system_prompt: Replaces the env's system prompt (``None`` keeps it).

    Raises:
        ConfigError: The template cannot render a tool turn after an assistant turn.
    """

    def __init__(self, tokenizer: Any, *, chat_template: str | None = None, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.template = chat_template or getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
        self.system_prompt = system_prompt
        gen = [tokenizer.eos_token_id] if isinstance(tokenizer.eos_token_id, int) else []
        self.eos_token_ids = frozenset(gen)
        self._tool_before, self._tool_after = self._split_tool_turn()

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The env's messages with the system prompt replaced when one is configured."""
        out = [dict(m) for m in messages]
        if self.system_prompt is not None and out and out[0].get("role") == "system":
            out[0]["content"] = self.system_prompt
        return out

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool) -> str:
        """The template's text for ``messages``."""
        return self.tokenizer.apply_chat_template(
            list(messages),
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with no special tokens added (the template writes its own)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Ids of the first prompt: the system and user turns and the assistant generation prompt."""
        return self.encode(self.render(self.messages(messages[:2]), add_generation_prompt=True))

    def tool_turn_text(self, content: str) -> str:
        """What follows a policy turn that called a tool: end of turn, tool turn, next generation prompt."""
        return self._tool_before + content + self._tool_after

    def tool_turn_ids(self, content: str, last_sampled_id: int | None = None) -> list[int]:
        """Ids of :meth:`tool_turn_text`. When the policy ended its turn with an EOS token that is the
        template's end-of-turn marker (Qwen's ``<|im_end|>``), that marker is not repeated."""
        text = self.tool_turn_text(content)
        if last_sampled_id is not None and last_sampled_id in self.eos_token_ids:
            eos_text = self.tokenizer.decode([last_sampled_id], skip_special_tokens=False)
            if eos_text and text.startswith(eos_text):
                text = text[len(eos_text) :]
        return self.encode(text)

    def episode_ids(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
        """Ids and mask of a whole recorded conversation (system, user, then assistant/tool turns), tokenised
        turn by turn exactly as a rollout builds it; the mask is 1 on assistant turns."""
        ids = self.prompt_ids(messages)
        mask = [0] * len(ids)
        for message in messages[2:]:
            if message["role"] == "assistant":
                piece, bit = self.encode(message["content"]), 1
            elif message["role"] == "tool":
                piece, bit = self.tool_turn_ids(message["content"]), 0
            else:
                raise ConfigError(f"unexpected {message['role']!r} message after the first user turn")
            ids += piece
            mask += [bit] * len(piece)
        return ids, mask

    def _split_tool_turn(self) -> tuple[str, str]:
        base = [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": _MARK_A},
        ]
        try:
            text = self.render(base + [{"role": "tool", "content": _MARK_T}], add_generation_prompt=True)
        except Exception as exc:  # any Jinja error of a foreign template
            raise ConfigError(
                f"the chat template cannot render a tool turn after an assistant turn: {exc}"
            ) from exc
        _, sep, rest = text.partition(_MARK_A)
        before, sep2, after = rest.partition(_MARK_T)
        if not sep or not sep2 or _MARK_A in rest:
            raise ConfigError(
                "the chat template does not render assistant and tool messages verbatim; set `chat_template` "
                "to a template that does (e.g. Qwen2.5's)"
            )
        return before, after


# -------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Sample:
    """One generated turn: the sampled ids (up to and including the one that ended it) and their logprobs."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


class Generator(Protocol):
    """Generates the next turn of many token sequences at once."""

    def generate(
        self,
        prompts: Sequence[list[int]],
        budgets: Sequence[int],
        *,
        temperature: float,
        top_p: float,
        top_k: int,
        seeds: Sequence[int],
    ) -> list[Sample]: ...


class HFGenerator:
    """KV-cached batched sampling with the training model itself (CPU or GPU), no copy of the weights.

    Decoding is :func:`drgym.llm.decode.decode`, the same as ``TransformersChatClient``'s: each row has its own
    seeded ``torch.Generator``, budget and stop, and logprobs are of the temperature-scaled distribution
    before top-k/top-p filtering.

    Args:
        model: A causal LM (its training/eval mode is restored after generating).
        tokenizer: Its tokenizer (for stop strings and the text of a turn).
        stop: Stop strings; kept in the text (they are closing tags).
        batch_size: Rows decoded together at most.
        autocast_dtype: Run under autocast with this dtype (``None``: no autocast).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        stop: Sequence[str],
        batch_size: int = 64,
        autocast_dtype: Any = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        eos: set[int] = set()
        for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            eos.update([value] if isinstance(value, int) else list(value or []))
        self.eos_token_ids = frozenset(eos)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else min(self.eos_token_ids, default=0)

    def generate(
        self,
        prompts: Sequence[list[int]],
        budgets: Sequence[int],
        *,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
        seeds: Sequence[int],
    ) -> list[Sample]:
        """Generate one turn per prompt (rows of ``batch_size`` at a time)."""
        out: list[Sample] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            out += self._generate(
                list(prompts[chunk]), list(budgets[chunk]), temperature, top_p, top_k, list(seeds[chunk])
            )
        return out

    def _generate(
        self,
        prompts: list[list[int]],
        budgets: list[int],
        temperature: float,
        top_p: float,
        top_k: int,
        seeds: list[int],
    ) -> list[Sample]:
        rows = [
            DecodeRow(prompt_ids=list(p), budget=b, seed=int(s), temperature=temperature, top_p=top_p, top_k=top_k,
                      stop=self.stop)
            for p, b, s in zip(prompts, budgets, seeds)
        ]
        decode(self.model, self.tokenizer, rows, eos_token_ids=self.eos_token_ids, pad_token_id=self.pad_token_id,
               autocast_dtype=self.autocast_dtype)
        return [self._sample(r) for r in rows]

    def _sample(self, row: DecodeRow) -> Sample:
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        text, met = truncate_at_stop(text, self.stop, True)
        return Sample(row.token_ids, row.logprobs, text, "stop" if met is not None else row.finish_reason or "length")


def failure_reward(reward_mode: str) -> float:
    """The reward of an episode that broke: the format reward (−1 in paper mode, else 0)."""
    return -1.0 if reward_mode == "paper" else 0.0


def sample_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from the run seed and a position (step, episode, turn): resumable, no global RNG."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

