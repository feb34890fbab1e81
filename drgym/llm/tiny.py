"""A tiny real causal LM for tests and CPU demos: random weights, a built-in tokenizer, no files, no downloads.

The model is a genuine ``transformers`` Qwen2 (2 layers, hidden size 64) built from a config, and the tokenizer
is either ``ByT5Tokenizer()`` (bytes + a few special tokens, needs no vocabulary file) or a word-level tokenizer
trained on the task's text at run time (:mod:`drgym.llm.tiny_tokenizer`: short sequences, one id per word,
what a tiny model needs to learn to copy), both given the ChatML chat template. Everything downstream (chat templates, batching, logprobs, GRPO updates) runs the same code paths a
full-size model would, in milliseconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drgym.errors import ConfigError, missing_dependency
from drgym.llm.local import CHATML_TEMPLATE

__all__ = ["TINY_CONFIG", "tiny_causal_lm", "tiny_chat_client"]

TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}
"""Qwen2 config values of the tiny model (``vocab_size`` and special token ids come from the tokenizer)."""

_VOCABS = ("byt5", "word")


def tiny_causal_lm(
    vocab: str = "byt5",
    seed: int = 0,
    *,
    texts: Iterable[str] | None = None,
    embedding_std: float | None = None,
    **config_overrides: Any,
) -> tuple[Any, Any]:
    """Build ``(model, tokenizer)``: a tiny randomly initialised Qwen2 causal LM and its tokenizer.

    Weights depend only on ``seed`` and the config (drawn from a private generator: the global torch RNG is
    neither read nor changed). The model is returned in eval mode on the CPU.

    Args:
        vocab: Tokenizer family: ``"byt5"`` (bytes, 384 ids, EOS ``</s>`` = 1, pad = 0) or ``"word"``
            (:func:`~drgym.llm.tiny_tokenizer.word_tokenizer` trained on ``texts``; EOS ``<|im_end|>``).
        seed: Seed of the weights.
        texts: The text the word tokenizer is trained on (the task's corpus and questions); ``"word"`` only.
        embedding_std: Standard deviation of the token embeddings (default: ``initializer_range``). Frozen
            embeddings need a larger one (e.g. 1.0) so that tied output logits can be sharp.
        **config_overrides: Any ``Qwen2Config`` field, e.g. ``num_hidden_layers=1`` or
            ``max_position_embeddings=128`` (a short context to provoke overflow).
    """
    if vocab not in _VOCABS:
        raise ConfigError(f"unknown tiny vocab {vocab!r}; valid: {', '.join(_VOCABS)}")
    if embedding_std is not None and not embedding_std > 0:
        raise ConfigError(f"`embedding_std` must be > 0, got {embedding_std!r}")
    if texts is not None and vocab != "word":
        raise ConfigError(f"`texts` train the word tokenizer; tiny vocab {vocab!r} takes none")
    try:
        import torch
        from transformers import ByT5Tokenizer, Qwen2Config, Qwen2ForCausalLM
    except ImportError as exc:
        raise missing_dependency(exc.name or "transformers", "agents") from exc

    if vocab == "word":
        from drgym.llm.tiny_tokenizer import word_tokenizer

        tokenizer = word_tokenizer(texts or ())
    else:
        tokenizer = ByT5Tokenizer()
        tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.padding_side = "left"
    values = {
        **TINY_CONFIG,
        "vocab_size": len(tokenizer),
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **config_overrides,
    }
    try:
        config = Qwen2Config(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad tiny model config {config_overrides!r}: {exc}") from exc
    with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG; leave it as it was
        model = Qwen2ForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.dim() >= 2:  # matrices; norms (ones) and biases (zeros) are already deterministic
                param.normal_(0.0, config.initializer_range, generator=generator)
        if embedding_std is not None:
            model.get_input_embeddings().weight.mul_(embedding_std / config.initializer_range)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def tiny_chat_client(seed: int = 0, config: dict[str, Any] | None = None, **client_kwargs: Any) -> Any:
    """A :class:`~drgym.llm.local.TransformersChatClient` over :func:`tiny_causal_lm`.

    Args:
        seed: Seed of the weights (the sampling seed is ``client_kwargs["seed"]``).
        config: Overrides of the tiny model's config.
        **client_kwargs: Passed to ``TransformersChatClient`` (``max_new_tokens``, ``temperature``, ...).
    """
    from drgym.llm.local import TransformersChatClient

    model, tokenizer = tiny_causal_lm(seed=seed, **(config or {}))
    return TransformersChatClient(model, tokenizer, **client_kwargs)
