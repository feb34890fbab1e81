"""A small word-level tokenizer for the tiny model, trained at run time on the task's own text.

With a byte tokenizer a tiny model has to copy a question into its search query and a found value into its
answer byte by byte, over sequences thousands of bytes long, which it does not learn in minutes on a CPU. With
this tokenizer every word of the training texts (names, years, numbers) is one token, spaces and punctuation
are tokens of their own (so a word has the same id wherever it stands), and the protocol's tags are single
ids: copying a value becomes copying a token or two. Unseen words fall back to BPE pieces down to single
characters, so any ASCII text round-trips exactly.

It is built deterministically in code (``tokenizers`` BPE trainer over sorted inputs), needs no file and no
download, and is returned as a ``transformers.PreTrainedTokenizerFast`` with the ChatML chat template.
"""

from __future__ import annotations

import datetime as _dt
import json
import string
from collections.abc import Iterable
from typing import Any

from drgym.errors import ConfigError, missing_dependency

__all__ = ["PROTOCOL_TAGS", "SPECIAL_TOKENS", "protocol_texts", "word_tokenizer"]

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
"""Pad, ChatML turn markers (``<|im_end|>`` is the EOS) and the unknown token; skipped when decoding."""

PROTOCOL_TAGS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<answer>",
    "</answer>",
    "<tool_response>",
    "</tool_response>",
    "<tools>",
    "</tools>",
)
"""Tags of the protocol, one id each; not special, so decoding keeps them (stop strings need them)."""

_SPLIT = r"\w+|\s|[^\w\s]"  # words whole; every space and punctuation character alone
_ALPHABET = sorted(set(string.printable))


def protocol_texts() -> list[str]:
    """Text of the protocol itself: system prompt, tool schemas, tool calls and the search results layout."""
    from drgym import protocol

    return [
        protocol.system_prompt(_dt.date(2000, 1, 1)),
        json.dumps(protocol.tool_schemas()),
        (
            '<think>I will search for the question.</think><tool_call>{"name": "web_search", "arguments": '
            '{"query": ["a query"]}}</tool_call>'
        ),
        '<tool_call>{"name": "browse_webpage", "arguments": {"url_list": ["https://local.drgym/x"]}}</tool_call>',
        "<think>The best-supported span is 1.</think><answer>the answer</answer>",
        "system user assistant tool",
        'Results for query "a query":\n1. Title\n   URL: https://local.drgym/synthetic/town-0001\n   Snippet.',
    ]


def word_tokenizer(texts: Iterable[str], *, min_frequency: int = 1, max_vocab: int = 32_000) -> Any:
    """Train the word-level tokenizer on ``texts`` (plus :func:`protocol_texts`).

    Args:
        texts: The task's text: corpus passages, questions, answers. Order does not matter (inputs are sorted).
        min_frequency: Merges seen fewer times are not learnt (1: every word of ``texts`` becomes a token).
        max_vocab: Vocabulary size at most; words beyond it are split into pieces.

    Returns:
        A ``PreTrainedTokenizerFast`` (left padding, pad ``<|endoftext|>``, EOS ``<|im_end|>``, ChatML chat
        template). Equal inputs give equal vocabularies, in any process.

    Raises:
        ConfigError: A bad argument.
    """
    if min_frequency < 1 or max_vocab < len(_ALPHABET) + len(SPECIAL_TOKENS) + len(PROTOCOL_TAGS):
        raise ConfigError(f"bad word tokenizer settings: min_frequency={min_frequency}, max_vocab={max_vocab}")
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast
    except ImportError as exc:
        raise missing_dependency(exc.name or "tokenizers", "agents") from exc
    from drgym.llm.local import CHATML_TEMPLATE

    corpus = sorted(set(protocol_texts()) | {t for t in texts if isinstance(t, str) and t})
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated")
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=max_vocab,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=_ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    tok.add_tokens([AddedToken(t, single_word=False, normalized=False, special=False) for t in PROTOCOL_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
