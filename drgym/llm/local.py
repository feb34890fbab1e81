"""Chat completion with a local ``transformers`` causal LM: batched, seeded, with sampled-token logprobs.

Generation is a plain KV-cached decoding loop rather than ``model.generate`` so that every request in a batch
keeps its own sampling options and its own seeded ``torch.Generator`` (reproducible without touching the
global RNG), stops at its own stop strings, and reports the id and log-probability of each token it sampled,
which GRPO needs. Concurrent ``complete`` calls are gathered by a micro-batcher and generated together in a
worker thread, so the event loop never blocks on the model.

Token accounting: ``token_ids``/``logprobs`` hold every generated token up to and including the one that
ended the reply (EOS, or the token that completed a stop string); ``text`` is cut at the stop string. The
logprob of a token is taken from the temperature-scaled distribution before top-k/top-p filtering (the same
quantity a GRPO trainer recomputes); for greedy decoding (``temperature=0``) from the unscaled one.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from drgym.errors import ConfigError, DrgymError, LLMError, missing_dependency
from drgym.llm.base import Completion, ContextOverflowError, Message
from drgym.llm.decode import DecodeRow, decode, sample_tokens

__all__ = [
    "CHATML_TEMPLATE",
    "MicroBatcher",
    "SamplingOptions",
    "TransformersChatClient",
    "check_messages",
    "sample_tokens",
    "truncate_at_stop",
]

CHATML_TEMPLATE = r"""
{%- for message in messages %}
    {%- if message['role'] == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""".strip()
"""Qwen2.5-style ChatML (tool results as ``<tool_response>`` inside a user turn); used when a tokenizer has none."""

_CLOSING_TAG_RE = re.compile(r"</[A-Za-z_][\w:.-]*>")
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_ALIASES = {"max_new_tokens": "max_tokens", "max_completion_tokens": "max_tokens"}
_IGNORED = frozenset({"logprobs", "top_logprobs", "model", "user"})  # always reported / meaningless locally


def truncate_at_stop(
    text: str, stop: Sequence[str], include_stop_str_in_output: bool | None = None
) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string; return the kept text and the stop string met (or ``None``).

    Args:
        text: Generated text.
        stop: Stop strings; the one occurring earliest wins (the longest one on a tie).
        include_stop_str_in_output: Keep the stop string in the text. ``None`` keeps it only when it is a
            closing tag such as ``</tool_call>`` or ``</answer>`` (the reply is incomplete without it) and drops
            any other (``<|im_end|>``, ``"\\n\\n"``).
    """
    best: tuple[int, int, str] | None = None
    for s in stop:
        if not s:
            continue
        pos = text.find(s)
        if pos >= 0 and (best is None or (pos, -len(s)) < (best[0], -best[1])):
            best = (pos, len(s), s)
    if best is None:
        return text, None
    pos, length, s = best
    keep = include_stop_str_in_output if include_stop_str_in_output is not None else bool(
        _CLOSING_TAG_RE.fullmatch(s))
    return text[: pos + length] if keep else text[:pos], s


def check_messages(messages: Any) -> list[Message]:
    """Validate a chat (list of ``{"role", "content"}`` dicts, content a string); raise ``ConfigError`` if bad."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ConfigError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.200}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ConfigError(
                f"messages[{i}] must be a dict with 'role' in {sorted(_ROLES)} and a string 'content', got {m!r:.200}"
            )
    return [dict(m) for m in messages]


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling options of one request, validated; names follow the OpenAI/vLLM APIs."""

    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 means no top-k filtering."""
    max_tokens: int = 256
    """New tokens at most (``max_new_tokens`` and ``max_completion_tokens`` are accepted as aliases)."""
    stop: tuple[str, ...] = ()
    seed: int | None = None
    include_stop_str_in_output: bool | None = None
    """See :func:`truncate_at_stop`; ``None`` keeps closing-tag stop strings only."""

    @classmethod
    def resolve(cls, *layers: Mapping[str, Any]) -> SamplingOptions:
        """Merge option dicts (later ones win; ``None`` values skipped) into validated options."""
        merged: dict[str, Any] = {}
        valid = set(cls.__dataclass_fields__)
        for layer in layers:
            for key, value in layer.items():
                key = _ALIASES.get(key, key)
                if value is None or key in _IGNORED:
                    continue
                if key == "n" and value == 1 or key == "stream" and value is False:
                    continue
                if key == "n":
                    raise ConfigError(f"one call returns one completion; got n={value!r} (call it n times)")
                if key == "stream":
                    raise ConfigError("streaming is not supported by local models; pass stream=False")
                if key not in valid:
                    raise ConfigError(f"unknown sampling option {key!r}; valid: {', '.join(sorted(valid))}")
                merged[key] = value
        if isinstance(merged.get("stop"), str):
            merged["stop"] = (merged["stop"],)
        if "stop" in merged:
            merged["stop"] = tuple(merged["stop"])
        opts = cls(**merged)
        opts._validate()
        return opts

    def _validate(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"sampling option {name} must be {want}, got {getattr(self, name)!r}")

        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 100:
            raise bad("temperature", "a number in [0, 100]")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number in (0, 1]")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise bad("top_k", "an integer >= 0 (0 or -1: off)")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise bad("max_tokens", "an integer >= 1")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "a non-empty string or a list of them")
        if self.seed is not None and not isinstance(self.seed, int):
            raise bad("seed", "an integer")


R = TypeVar("R")
T = TypeVar("T")


@dataclass
class _Pending(Generic[R, T]):
    loop: asyncio.AbstractEventLoop
    items: list[tuple[R, asyncio.Future[T]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class MicroBatcher(Generic[R, T]):
    """Gathers requests submitted concurrently on an event loop into batches run in a worker thread.

    ``run(batch)`` returns one result or exception per item, in order. Batches run one at a time across all
    loops (the model is not thread-safe); while one runs, new requests queue up and form the next batch.

    Args:
        run: Processes a batch (blocking; called in a worker thread).
        max_batch_size: Largest batch.
        wait_s: After the first request of a batch arrives, how long to wait for company.
    """

    def __init__(self, run: Callable[[list[R]], list[T | BaseException]], *, max_batch_size: int,
                 wait_s: float) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if wait_s < 0:
            raise ConfigError(f"batch wait must be >= 0 seconds, got {wait_s!r}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _Pending[R, T]] = {}
        self.batches = 0
        """Batches run so far (with :attr:`items`, shows how well concurrent calls are being batched)."""
        self.items = 0

    def run_now(self, items: list[R]) -> list[T | BaseException]:
        """Run ``items`` in batches in this thread (blocking); errors come back as values."""
        out: list[T | BaseException] = []
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start:start + self.max_batch_size]
            with self._lock:
                self.batches += 1
                self.items += len(chunk)
                try:
                    results = self._run(chunk)
                except Exception as exc:  # noqa: BLE001  # a whole-batch failure (e.g. OOM) fails each item
                    results = [_as_llm_error(exc)] * len(chunk)
            out.extend(results)
        return out

    async def submit(self, items: Sequence[R]) -> list[asyncio.Future[T]]:
        """Queue ``items``; return one future per item."""
        loop = asyncio.get_running_loop()
        with self._pending_lock:  # several loops (threads) may share one client
            pending = self._pending.get(id(loop))
            if pending is None or pending.loop is not loop:
                self._pending = {k: p for k, p in self._pending.items() if not p.loop.is_closed()}
                pending = self._pending[id(loop)] = _Pending(loop)
        futures: list[asyncio.Future[T]] = [loop.create_future() for _ in items]
        pending.items.extend(zip(items, futures))
        if pending.task is None or pending.task.done():
            pending.task = loop.create_task(self._drain(pending))
        return futures

    async def _drain(self, pending: _Pending[R, T]) -> None:
        batch: list[tuple[R, asyncio.Future[T]]] = []
        try:
            while pending.items:
                if self.wait_s > 0 and len(pending.items) < self.max_batch_size:
                    await asyncio.sleep(self.wait_s)
                batch = [(r, f) for r, f in pending.items[: self.max_batch_size] if not f.done()]
                del pending.items[: self.max_batch_size]
                if not batch:
                    continue
                results = await asyncio.to_thread(self.run_now, [r for r, _ in batch])
                for (_, fut), result in zip(batch, results):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
                batch = []
        except BaseException as exc:  # cancelled (loop shutting down) or the worker could not start
            for _, fut in batch + pending.items:
                if fut.done():
                    continue
                if isinstance(exc, Exception):
                    fut.set_exception(_as_llm_error(exc))
                else:
                    fut.cancel()
            pending.items.clear()
            if not isinstance(exc, Exception):
                raise


def _as_llm_error(exc: BaseException) -> BaseException:
    if isinstance(exc, DrgymError):
        return exc
    err = LLMError(f"generation failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


@dataclass(frozen=True)
class _Request:
    messages: list[Message]
    options: SamplingOptions


class TransformersChatClient:
    """A :class:`~drgym.llm.base.ChatClient` backed by a local causal LM.

    Args:
        model: A model name or path (loaded with ``AutoModelForCausalLM``) or a loaded model.
        tokenizer: The tokenizer; loaded from ``model`` when it is a name. If it has no chat template,
            :data:`CHATML_TEMPLATE` is used (and ``<|im_end|>`` becomes a stop string if it is not a token).
        device: Where to run; default: the loaded model's device, or CUDA when available for a name.
        dtype: Weights dtype when loading by name (``"auto"``, ``"bfloat16"``, ...).
        max_new_tokens: Default ``max_tokens`` of a reply.
        stop: Default stop strings.
        include_stop_str_in_output: Default for keeping stop strings (see :func:`truncate_at_stop`).
        chat_template: A Jinja chat template overriding the tokenizer's.
        max_context: Context window in tokens; default ``config.max_position_embeddings``.
        max_batch_size: Largest batch the micro-batcher forms.
        batch_wait_s: How long a request waits for others to batch with.
        seed: Seeds the per-request seeds of requests that bring none (reproducible runs); ``None``: entropy.
        trust_remote_code: Passed to ``from_pretrained``.
        **default_sampling: Default ``temperature``, ``top_p``, ``top_k``, ...
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: str | None = None,
        dtype: str = "auto",
        max_new_tokens: int = 256,
        stop: Sequence[str] | str | None = None,
        include_stop_str_in_output: bool | None = None,
        chat_template: str | None = None,
        max_context: int | None = None,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.005,
        seed: int | None = None,
        trust_remote_code: bool = False,
        **default_sampling: Any,
    ) -> None:
        self._torch = _import_torch()
        self.model, self.tokenizer = _load(model, tokenizer, device, dtype, trust_remote_code)
        self.device = self._torch.device(device) if device else next(self.model.parameters()).device
        self.chat_template = chat_template or getattr(self.tokenizer, "chat_template", None) or CHATML_TEMPLATE
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if "<|im_end|>" in self.chat_template and "<|im_end|>" not in self.tokenizer.get_vocab():
            stops.append("<|im_end|>")
        self.defaults = SamplingOptions.resolve(
            {"max_tokens": max_new_tokens, "stop": stops, "include_stop_str_in_output": include_stop_str_in_output},
            default_sampling,
        )
        self.max_context = max_context or _context_length(self.model, self.tokenizer)
        self.eos_token_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (min(self.eos_token_ids) if self.eos_token_ids else 0)
        self._seeds = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
        self._batcher: MicroBatcher[_Request, Completion] = MicroBatcher(
            self._generate, max_batch_size=max_batch_size, wait_s=batch_wait_s)

    @property
    def stats(self) -> dict[str, int]:
        """Batches generated and requests served so far (requests / batches = the batching achieved)."""
        return {"batches": self._batcher.batches, "requests": self._batcher.items}

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        return f"TransformersChatClient(model={name!r}, device={str(self.device)!r})"

    # -- public API ------------------------------------------------------------------------------------------

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        """Generate one reply; concurrent calls are batched together.

        Raises:
            ContextOverflowError: The prompt does not fit the context window.
            ConfigError: Bad messages or sampling options.
        """
        (future,) = await self._batcher.submit([self._request(messages, sampling)])
        return await future

    async def complete_batch(self, batch: Sequence[list[Message]], **sampling: Any) -> list[Completion]:
        """Generate one reply per chat (same options for all); raises the first per-chat error, if any."""
        futures = await self._batcher.submit([self._request(m, sampling) for m in batch])
        results = await asyncio.gather(*futures, return_exceptions=True)
        return _raise_first(results)

    def generate_batch(self, batch: Sequence[list[Message]], **sampling: Any) -> list[Completion]:
        """Blocking :meth:`complete_batch` for synchronous code (training loops, scripts)."""
        return _raise_first(self._batcher.run_now([self._request(m, sampling) for m in batch]))

    def render(self, messages: list[Message]) -> str:
        """The prompt text the model sees for ``messages`` (chat template with the generation prompt)."""
        return self.tokenizer.apply_chat_template(
            check_messages(messages), chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )

    def encode(self, messages: list[Message]) -> list[int]:
        """Prompt token ids for ``messages`` (no extra special tokens: the template has them)."""
        return list(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    async def aclose(self) -> None:
        """Nothing to release (the model stays loaded); present for a uniform client interface."""

    # -- generation ------------------------------------------------------------------------------------------

    def _request(self, messages: list[Message], sampling: Mapping[str, Any]) -> _Request:
        opts = SamplingOptions.resolve(_as_dict(self.defaults), sampling)
        if opts.seed is None:
            opts = replace(opts, seed=self._seeds.getrandbits(63))
        return _Request(check_messages(messages), opts)

    def _generate(self, requests: list[_Request]) -> list[Completion | BaseException]:
        prepared: list[tuple[SamplingOptions, DecodeRow] | BaseException] = []
        for req in requests:
            try:
                prepared.append((req.options, self._row(req)))
            except DrgymError as exc:  # this request only (e.g. too long); the others still run
                prepared.append(exc)
        rows = [p[1] for p in prepared if not isinstance(p, BaseException)]
        decode(self.model, self.tokenizer, rows, eos_token_ids=self.eos_token_ids, pad_token_id=self.pad_token_id)
        return [p if isinstance(p, BaseException) else self._finish(*p) for p in prepared]

    def _row(self, req: _Request) -> DecodeRow:
        ids = self.encode(req.messages)
        opts = req.options
        budget = opts.max_tokens
        if self.max_context is not None:
            if len(ids) >= self.max_context:
                raise ContextOverflowError(
                    f"the prompt is {len(ids)} tokens but the model's maximum context length is {self.max_context} "
                    "tokens; shorten the conversation"
                )
            budget = min(budget, self.max_context - len(ids))
        return DecodeRow(prompt_ids=ids, budget=budget, seed=opts.seed, temperature=opts.temperature,
                         top_p=opts.top_p, top_k=opts.top_k, stop=tuple(opts.stop))

    def _finish(self, opts: SamplingOptions, row: DecodeRow) -> Completion:
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        text, met = truncate_at_stop(text, opts.stop, opts.include_stop_str_in_output)
        finish_reason = "stop" if met is not None else row.finish_reason
        return Completion(
            text=text,
            tokens=len(row.token_ids),
            prompt_tokens=len(row.prompt_ids),
            finish_reason=finish_reason,
            token_ids=row.token_ids,
            logprobs=row.logprobs,
            extras={"prompt_token_ids": row.prompt_ids, "stop_reason": met if met is not None else row.stop_reason,
                    "seed": opts.seed},
        )


def _raise_first(results: Sequence[Completion | BaseException]) -> list[Completion]:
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return list(results)  # type: ignore[arg-type]


def _as_dict(opts: SamplingOptions) -> dict[str, Any]:
    return {name: getattr(opts, name) for name in opts.__dataclass_fields__}


def _import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise missing_dependency(exc.name or "torch", "agents") from exc
    return torch


def _load(model: Any, tokenizer: Any, device: str | None, dtype: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """Load model and tokenizer from a name/path, or adopt given objects (moved to ``device`` if one is set)."""
    import transformers

    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        try:
            if tokenizer is None:
                tokenizer = _load_tokenizer(name, trust_remote_code)
            dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
            model = transformers.AutoModelForCausalLM.from_pretrained(
                name, trust_remote_code=trust_remote_code, **{dtype_key: dtype})
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model {name!r}: {exc}") from exc
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
    elif tokenizer is None:
        raise ConfigError("a tokenizer is required when model is a loaded model object")
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def _load_tokenizer(name: str, trust_remote_code: bool) -> Any:
    """``AutoTokenizer``, but honouring the ``tokenizer_class`` a local checkpoint declares.

    Recent transformers pick the tokenizer from the model type in ``config.json`` first, so a Qwen2 model
    saved with a ByT5 tokenizer (the tiny model's checkpoints) would come back with an empty Qwen2 tokenizer.
    """
    import json

    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    config_path = os.path.join(name, "tokenizer_config.json")
    if not os.path.isfile(config_path):
        return tokenizer
    with open(config_path, encoding="utf-8") as f:
        declared = json.load(f).get("tokenizer_class")
    loaded = type(tokenizer).__name__
    if isinstance(declared, str) and declared.removesuffix("Fast") != loaded.removesuffix("Fast"):
        cls = getattr(transformers, declared, None)
        if cls is not None:
            return cls.from_pretrained(name)
    return tokenizer


def _context_length(model: Any, tokenizer: Any) -> int | None:
    n = getattr(model.config, "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 10**8 else None


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(gen, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)
