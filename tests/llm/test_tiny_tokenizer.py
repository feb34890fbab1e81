"""The word-level tokenizer of the tiny model: exact round trips, one id per protocol tag, determinism."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from drgym.data.synthetic import make_synthetic_task
from drgym.errors import ConfigError
from drgym.llm.tiny import tiny_causal_lm
from drgym.llm.tiny_tokenizer import PROTOCOL_TAGS, SPECIAL_TOKENS, word_tokenizer


def _texts() -> list[str]:
    records, passages = make_synthetic_task(24, seed=3)
    return [p.text for p in passages] + [p.title for p in passages] + [r.question for r in records]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer(_texts())


def test_protocol_text_round_trips_exactly(tok) -> None:
    records, passages = make_synthetic_task(24, seed=3)
    question = records[0].question
    text = (
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n<think>I will search.</think>"
        f'<tool_call>{{"name": "web_search", "arguments": {{"query": ["{question}"]}}}}</tool_call><|im_end|>\n'
        f"<|im_start|>user\n<tool_response>\n1. {passages[0].title}\n   URL: https://local.drgym/synthetic/"
        f"{passages[0].id}\n   {passages[0].text}\n</tool_response><|im_end|>\n"
        "<think>Unseen words: Qzxv 98765 {}[]!?</think><answer>  two  spaces\ttab</answer>"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    assert len(ids) < len(text) / 2  # words are single tokens, far shorter than bytes


def test_special_tokens_and_tags_are_single_ids(tok) -> None:
    for t in (*SPECIAL_TOKENS, *PROTOCOL_TAGS):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [t]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok("<answer>x</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "<answer>x</answer>"  # tags survive, EOS does not


def test_a_word_has_one_id_wherever_it_stands(tok) -> None:
    records, _ = make_synthetic_task(24, seed=3)
    answer = records[0].answers[0]
    alone = tok(answer, add_special_tokens=False)["input_ids"]
    in_text = tok(f"was {answer}.", add_special_tokens=False)["input_ids"]
    assert len(alone) == 1 and alone[0] in in_text


def test_same_inputs_give_the_same_vocabulary_in_any_order(tok) -> None:
    again = word_tokenizer(list(reversed(_texts())))
    assert again.get_vocab() == tok.get_vocab()
    assert word_tokenizer(["Other words entirely"]).get_vocab() != tok.get_vocab()


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError, match="min_frequency=0"):
        word_tokenizer([], min_frequency=0)


def test_tiny_model_with_word_vocab_uses_the_tokenizer_size() -> None:
    model, tokenizer = tiny_causal_lm("word", seed=0, texts=_texts(), num_hidden_layers=1)
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n"
    with pytest.raises(ConfigError, match="takes none"):
        tiny_causal_lm("byt5", texts=["a"])


def test_embedding_std_scales_only_the_embeddings() -> None:
    a, _ = tiny_causal_lm("word", texts=["w"], num_hidden_layers=1)
    b, _ = tiny_causal_lm("word", texts=["w"], num_hidden_layers=1, embedding_std=1.0)
    ea, eb = a.get_input_embeddings().weight, b.get_input_embeddings().weight
    assert 0.8 < float(eb.std()) < 1.2 and float(ea.std()) < 0.05
    assert all(
        (pa == pb).all() for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()) if "embed" not in n
    )
    with pytest.raises(ConfigError, match="embedding_std"):
        tiny_causal_lm(embedding_std=0.0)
