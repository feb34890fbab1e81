"""VLLMChatClient with a real vLLM engine over the tiny model saved to disk (needs vllm and a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a GPU"),
]

CHATS = [
    [{"role": "user", "content": "Who wrote Hamlet?"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Largest planet?"}],
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from drgym.llm.tiny import tiny_causal_lm
    from drgym.llm.vllm import VLLMChatClient

    path: Path = tmp_path_factory.mktemp("tiny-vllm")
    model, tokenizer = tiny_causal_lm(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return VLLMChatClient(str(path), max_new_tokens=16, gpu_memory_utilization=0.2, max_model_len=1024,
                          enforce_eager=True, tokenizer_mode="auto")


async def test_batch_returns_tokens_and_logprobs(client) -> None:
    results = await client.complete_batch(CHATS, seed=3)
    assert len(results) == 3
    for r in results:
        assert 1 <= r.tokens <= 16
        assert len(r.token_ids) == len(r.logprobs) == r.tokens
        assert all(lp <= 0 for lp in r.logprobs)
        assert r.prompt_tokens == len(r.extras["prompt_token_ids"]) > 0


async def test_seeded_sampling_is_reproducible(client) -> None:
    a = await client.complete(CHATS[0], seed=7, temperature=1.0)
    b = await client.complete(CHATS[0], seed=7, temperature=1.0)
    assert a.token_ids == b.token_ids


async def test_stop_string_cuts_the_text(client) -> None:
    free = await client.complete(CHATS[1], seed=21, max_tokens=40)
    if len(free.text) < 12:
        pytest.skip("this seed ended early")
    stop = free.text[10:12]
    cut = await client.complete(CHATS[1], seed=21, max_tokens=40, stop=[stop], include_stop_str_in_output=False)
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.finish_reason == "stop"


async def test_too_long_prompt_is_context_overflow(client) -> None:
    from drgym.llm.base import ContextOverflowError

    with pytest.raises(ContextOverflowError):
        await client.complete([{"role": "user", "content": "x" * 5000}])
