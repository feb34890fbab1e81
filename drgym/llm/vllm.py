"""Chat completion with an in-process vLLM engine (GPU); vLLM is imported only when a client is built.

Concurrent ``complete`` calls are gathered by the same micro-batcher as the transformers client and handed to
``LLM.chat`` together in a worker thread (vLLM schedules the batch itself). Each reply carries its token ids
and the logprob of every sampled token (``SamplingParams(logprobs=0)``). Those logprobs follow the engine's
``logprobs_mode`` (in recent vLLM: raw model logprobs, before temperature, unless the engine is built with
e.g. ``logprobs_mode="processed_logprobs"``).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from drgym.errors import ConfigError, missing_dependency
from drgym.llm.base import Completion, ContextOverflowError, Message
from drgym.llm.local import MicroBatcher, SamplingOptions, _raise_first, check_messages, truncate_at_stop

__all__ = ["VLLMChatClient"]

_CONTEXT_RE = re.compile(r"maximum (model|context) length|longer than the maximum|context length", re.IGNORECASE)


@dataclass(frozen=True)
class _Request:
    messages: list[Message]
    options: SamplingOptions


class VLLMChatClient:
    """A :class:`~drgym.llm.base.ChatClient` over ``vllm.LLM``.

    Args:
        model: A model name or path, or an already built ``vllm.LLM`` (e.g. shared with a trainer).
        max_new_tokens: Default ``max_tokens`` of a reply.
        stop: Default stop strings.
        include_stop_str_in_output: Default for keeping stop strings (see
            :func:`~drgym.llm.local.truncate_at_stop`; ``None`` keeps closing tags only).
        chat_template: A Jinja chat template overriding the tokenizer's.
        default_sampling: Default ``temperature``, ``top_p``, ``top_k``, ``seed``, ...
        max_batch_size: Largest batch handed to the engine at once.
        batch_wait_s: How long a request waits for others to batch with.
        seed: Seeds the per-request seeds of requests that bring none; ``None``: entropy.
        **engine_kwargs: Passed to ``vllm.LLM`` (``tensor_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ``dtype``, ...).
    """

    def __init__(
        self,
        model: Any,
        *,
        max_new_tokens: int = 512,
        stop: Sequence[str] | str | None = None,
        include_stop_str_in_output: bool | None = None,
        chat_template: str | None = None,
        default_sampling: Mapping[str, Any] | None = None,
        max_batch_size: int = 256,
        batch_wait_s: float = 0.005,
        seed: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise missing_dependency("vllm", "vllm") from exc
        self._vllm = vllm
        self.llm = vllm.LLM(model=os.fspath(model), **engine_kwargs) if isinstance(model, (str, os.PathLike)) else model
        self.chat_template = chat_template
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        self.defaults = SamplingOptions.resolve(
            {"max_tokens": max_new_tokens, "stop": stops, "include_stop_str_in_output": include_stop_str_in_output},
            default_sampling or {},
        )
        self._seeds = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
        self._batcher: MicroBatcher[_Request, Completion] = MicroBatcher(
            self._generate, max_batch_size=max_batch_size, wait_s=batch_wait_s)

    @property
    def stats(self) -> dict[str, int]:
        """Batches handed to the engine and requests served so far."""
        return {"batches": self._batcher.batches, "requests": self._batcher.items}

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        """Generate one reply; concurrent calls are batched together."""
        (future,) = await self._batcher.submit([self._request(messages, sampling)])
        return await future

    async def complete_batch(self, batch: Sequence[list[Message]], **sampling: Any) -> list[Completion]:
        """Generate one reply per chat (same options for all); raises the first per-chat error, if any."""
        futures = await self._batcher.submit([self._request(m, sampling) for m in batch])
        return _raise_first(await asyncio.gather(*futures, return_exceptions=True))

    def generate_batch(self, batch: Sequence[list[Message]], **sampling: Any) -> list[Completion]:
        """Blocking :meth:`complete_batch` for synchronous code."""
        return _raise_first(self._batcher.run_now([self._request(m, sampling) for m in batch]))

    async def aclose(self) -> None:
        """Nothing to release here (the engine lives as long as the client); uniform interface."""

    def _request(self, messages: list[Message], sampling: Mapping[str, Any]) -> _Request:
        defaults = {name: getattr(self.defaults, name) for name in self.defaults.__dataclass_fields__}
        opts = SamplingOptions.resolve(defaults, sampling)
        if opts.seed is None:
            opts = replace(opts, seed=self._seeds.getrandbits(63))
        return _Request(check_messages(messages), opts)

    def _params(self, opts: SamplingOptions) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=opts.temperature,
            top_p=opts.top_p,
            top_k=opts.top_k if opts.top_k > 0 else -1,
            max_tokens=opts.max_tokens,
            stop=list(opts.stop) or None,
            seed=opts.seed,
            logprobs=0,  # the sampled token's logprob only
            include_stop_str_in_output=True,  # cut by truncate_at_stop, which knows which stops to keep
            skip_special_tokens=True,
        )

    def _generate(self, requests: list[_Request]) -> list[Completion | BaseException]:
        try:
            outputs = self.llm.chat([r.messages for r in requests], sampling_params=[self._params(r.options)
                                    for r in requests], use_tqdm=False, chat_template=self.chat_template)
        except ValueError as exc:
            if len(requests) > 1:  # find which request failed; let the others finish
                return [result for r in requests for result in self._generate([r])]
            if _CONTEXT_RE.search(str(exc)):
                return [ContextOverflowError(str(exc))]
            return [ConfigError(f"vLLM rejected the request: {exc}")]
        return [_completion(out, r.options) for out, r in zip(outputs, requests)]


def _completion(output: Any, opts: SamplingOptions) -> Completion:
    gen = output.outputs[0]
    token_ids = list(gen.token_ids)
    text, met = truncate_at_stop(gen.text, opts.stop, opts.include_stop_str_in_output)
    prompt_ids = list(output.prompt_token_ids or [])
    return Completion(
        text=text,
        tokens=len(token_ids),
        prompt_tokens=len(prompt_ids),
        finish_reason="stop" if met is not None else gen.finish_reason,
        token_ids=token_ids,
        logprobs=_sampled_logprobs(gen.logprobs, token_ids),
        extras={"prompt_token_ids": prompt_ids, "stop_reason": met if met is not None else gen.stop_reason,
                "seed": opts.seed},
    )


def _sampled_logprobs(logprobs: Any, token_ids: list[int]) -> list[float] | None:
    """``logprobs[i][token_ids[i]].logprob`` for each position, or ``None`` when vLLM reported none."""
    if logprobs is None:
        return None
    try:
        return [float(logprobs[i][tok].logprob) for i, tok in enumerate(token_ids)]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None

