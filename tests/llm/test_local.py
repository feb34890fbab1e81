"""TransformersChatClient with the tiny real model: batching, stop strings, logprobs, seeding, context limits."""

from __future__ import annotations

import asyncio

import pytest

from drgym.errors import ConfigError
from drgym.llm.base import ContextOverflowError
from drgym.llm.local import (
    CHATML_TEMPLATE,
    SamplingOptions,
    TransformersChatClient,
    sample_tokens,
    truncate_at_stop,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

CHATS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Who wrote Hamlet?"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Name the largest planet of the solar system, please."}],
]


@pytest.fixture
def client(tiny_lm) -> TransformersChatClient:
    return TransformersChatClient(*tiny_lm, max_new_tokens=12)


# -- stop strings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stop", "include", "expected"),
    [
        ("<think>a</think><tool_call>{}</tool_call> junk", ["</tool_call>"], None,
         ("<think>a</think><tool_call>{}</tool_call>", "</tool_call>")),
        ("<answer>Paris</answer><|im_end|>", ["</answer>"], None, ("<answer>Paris</answer>", "</answer>")),
        ("Paris<|im_end|>more", ["<|im_end|>"], None, ("Paris", "<|im_end|>")),
        ("Paris</answer>", ["</answer>"], False, ("Paris", "</answer>")),
        ("Paris\n\nmore", ["\n\n"], True, ("Paris\n\n", "\n\n")),
        ("a STOP b </x>", ["</x>", "STOP"], None, ("a ", "STOP")),  # the earliest stop wins
        ("abcdef", ["cd", "bcd"], True, ("abcd", "bcd")),  # same end, the earliest start wins
        ("nothing here", ["</answer>"], None, ("nothing here", None)),
        ("", ["x"], None, ("", None)),
    ],
)
def test_truncate_at_stop(text, stop, include, expected) -> None:
    assert truncate_at_stop(text, stop, include) == expected


def test_sampling_options_are_validated() -> None:
    opts = SamplingOptions.resolve({"max_tokens": 5}, {"max_new_tokens": 9, "stop": "</answer>", "top_p": None})
    assert (opts.max_tokens, opts.stop, opts.top_p) == (9, ("</answer>",), 1.0)
    with pytest.raises(ConfigError, match=r"unknown sampling option 'temprature'; valid: .*temperature"):
        SamplingOptions.resolve({"temprature": 0.5})
    with pytest.raises(ConfigError, match=r"temperature must be a number in \[0, 100\], got -1"):
        SamplingOptions.resolve({"temperature": -1})
    with pytest.raises(ConfigError, match="max_tokens must be an integer >= 1"):
        SamplingOptions.resolve({"max_tokens": 0})
    with pytest.raises(ConfigError, match="n=3"):
        SamplingOptions.resolve({"n": 3})


# -- generation -------------------------------------------------------------------------------------------------


async def test_batch_of_three_returns_three_consistent_completions(client) -> None:
    results = await client.complete_batch(CHATS, temperature=1.0, seed=11)
    assert len(results) == 3
    for chat, result in zip(CHATS, results):
        assert result.prompt_tokens == len(client.encode(chat)) == len(result.extras["prompt_token_ids"])
        assert result.tokens == len(result.token_ids) == len(result.logprobs)
        assert 1 <= result.tokens <= 12
        assert all(lp <= 0 for lp in result.logprobs)
        assert result.finish_reason in ("stop", "length")
        assert result.text == client.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert client.stats == {"batches": 1, "requests": 3}


async def test_batched_rows_match_single_generation(client) -> None:
    """Left padding, attention masks and positions are right: a row's output does not depend on its batch."""
    batched = await client.complete_batch(CHATS, seed=5)
    for chat, row in zip(CHATS, batched):
        alone = await client.complete(chat, seed=5)
        assert alone.token_ids == row.token_ids
        assert alone.logprobs == pytest.approx(row.logprobs, abs=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
async def test_logprobs_match_a_teacher_forced_forward_pass(client, temperature) -> None:
    result = await client.complete(CHATS[0], temperature=temperature, seed=2, max_tokens=10)
    prompt = result.extras["prompt_token_ids"]
    ids = torch.tensor([prompt + result.token_ids])
    with torch.no_grad():
        logits = client.model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    scaled = logits / (temperature if temperature > 0 else 1.0)
    expected = torch.log_softmax(scaled, -1).gather(1, torch.tensor(result.token_ids)[:, None]).squeeze(1)
    assert result.logprobs == pytest.approx(expected.tolist(), abs=1e-4)
    if temperature == 0:
        assert result.token_ids == logits.argmax(-1).tolist()


async def test_concurrent_calls_are_micro_batched(client) -> None:
    results = await asyncio.gather(*(client.complete(chat, seed=i) for i, chat in enumerate(CHATS * 2)))
    assert len(results) == 6
    assert client.stats["requests"] == 6
    assert client.stats["batches"] < 6


async def test_stop_string_ends_generation(client) -> None:
    free = await client.complete(CHATS[1], seed=21, max_tokens=40, temperature=1.0)
    assert free.tokens == 40, "seed 21 should run to the length limit for this test to mean anything"
    stop = free.text[10:12]
    expected_cut = free.text.index(stop)
    cut = await client.complete(CHATS[1], seed=21, max_tokens=40, stop=[stop], include_stop_str_in_output=False)
    kept = await client.complete(CHATS[1], seed=21, max_tokens=40, stop=[stop], include_stop_str_in_output=True)
    assert cut.text == free.text[:expected_cut]
    assert kept.text == free.text[: expected_cut + len(stop)]
    assert cut.finish_reason == kept.finish_reason == "stop"
    assert cut.extras["stop_reason"] == stop
    assert cut.tokens < 40  # generation really stopped, the text was not merely cut afterwards
    assert cut.token_ids == free.token_ids[: cut.tokens]
    assert len(cut.logprobs) == cut.tokens


async def test_eos_token_stops_generation(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    greedy = await TransformersChatClient(model, tokenizer, temperature=0.0).complete(CHATS[0], max_tokens=3)
    first = greedy.token_ids[0]
    client = TransformersChatClient(model, tokenizer, temperature=0.0)
    client.eos_token_ids = frozenset({first})
    result = await client.complete(CHATS[0], max_tokens=3)
    assert (result.token_ids, result.finish_reason, result.extras["stop_reason"]) == ([first], "stop", first)


async def test_seeded_sampling_is_reproducible(client, tiny_lm) -> None:
    a = await client.complete(CHATS[0], seed=7, temperature=1.0)
    b = await client.complete(CHATS[0], seed=7, temperature=1.0)
    c = await client.complete(CHATS[0], seed=8, temperature=1.0)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    # A client-level seed makes the sequence of unseeded requests reproducible.
    runs = []
    for _ in range(2):
        seeded = TransformersChatClient(*tiny_lm, max_new_tokens=8, seed=123)
        runs.append([(await seeded.complete(CHATS[2])).token_ids for _ in range(3)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]


async def test_top_k_one_and_tiny_top_p_are_greedy(client) -> None:
    greedy = await client.complete(CHATS[0], temperature=0.0)
    top_k = await client.complete(CHATS[0], temperature=1.0, top_k=1, seed=1)
    top_p = await client.complete(CHATS[0], temperature=1.0, top_p=1e-6, seed=2)
    assert greedy.token_ids == top_k.token_ids == top_p.token_ids


def test_sample_tokens_respects_filters() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0]] * 4)
    temperature = torch.tensor([1.0, 1.0, 1.0, 0.0])
    top_p = torch.tensor([1.0, 1.0, 0.5, 1.0])
    top_k = torch.tensor([0, 2, 0, 0])
    seen: list[set[int]] = [set() for _ in range(4)]
    for u in torch.linspace(0, 0.999, 50):
        tokens, logprobs = sample_tokens(logits, temperature, top_p, top_k, torch.full((4,), float(u)))
        for row, tok in enumerate(tokens.tolist()):
            seen[row].add(tok)
        assert torch.allclose(logprobs, torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1))
    assert seen == [{0, 1, 2, 3}, {1, 2}, {1}, {1}]  # free, top-2, nucleus 0.5 (p(1)=0.64), greedy


async def test_prompt_over_the_context_is_context_overflow(tiny_lm) -> None:
    client = TransformersChatClient(*tiny_lm, max_context=96, max_new_tokens=50)
    long_chat = [{"role": "user", "content": "x" * 200}]
    short_chat = [{"role": "user", "content": "hi"}]  # 33 prompt tokens: room for 63 new ones
    long_result, short_result = await asyncio.gather(
        client.complete(long_chat), client.complete(short_chat, max_tokens=80, seed=3), return_exceptions=True)
    assert isinstance(long_result, ContextOverflowError)
    assert "maximum context length is 96 tokens" in str(long_result)
    assert short_result.prompt_tokens + short_result.tokens <= 96  # the same batch still generated
    with pytest.raises(ContextOverflowError, match="the prompt is 2.. tokens"):
        await client.complete_batch([short_chat, long_chat])


async def test_default_chatml_template_for_tokenizers_without_one(tiny_lm) -> None:
    from transformers import ByT5Tokenizer

    client = TransformersChatClient(tiny_lm[0], ByT5Tokenizer(), max_new_tokens=4)
    assert client.chat_template == CHATML_TEMPLATE
    assert "<|im_end|>" in client.defaults.stop  # not a token of ByT5, so it must be a stop string
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
            {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"}]
    assert client.render(chat) == (
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (await client.complete(chat)).tokens <= 4


async def test_bad_messages_and_options_fail_clearly(client) -> None:
    with pytest.raises(ConfigError, match=r"messages\[0\] must be a dict with 'role'"):
        await client.complete([{"role": "robot", "content": "x"}])
    with pytest.raises(ConfigError, match="messages must be a non-empty list"):
        await client.complete([])
    with pytest.raises(ConfigError, match="top_p must be a number in"):
        await client.complete(CHATS[0], top_p=0)


def test_generate_batch_matches_async(client) -> None:
    sync = client.generate_batch(CHATS[:2], seed=9)
    again = asyncio.run(client.complete_batch(CHATS[:2], seed=9))
    assert [r.token_ids for r in sync] == [r.token_ids for r in again]


def test_tiny_model_is_seeded_without_touching_the_global_rng() -> None:
    from drgym.llm.tiny import tiny_causal_lm

    state = torch.random.get_rng_state()
    a, _ = tiny_causal_lm(seed=1, num_hidden_layers=1)
    b, _ = tiny_causal_lm(seed=1, num_hidden_layers=1)
    c, _ = tiny_causal_lm(seed=2, num_hidden_layers=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    with pytest.raises(ConfigError, match="unknown tiny vocab 'gpt2'; valid: byt5"):
        tiny_causal_lm(vocab="gpt2")
