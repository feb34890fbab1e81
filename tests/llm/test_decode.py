"""The one decoder: a row's draw does not depend on its batch, and the chat client and the GRPO sampler,
given the same prompt, seed and settings, sample the same tokens (both run drgym.llm.decode)."""

from __future__ import annotations

import pytest

from drgym.llm.decode import DecodeRow, decode
from drgym.llm.local import TransformersChatClient

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _rows(prompts: list[list[int]], budgets: list[int], seeds: list[int]) -> list[DecodeRow]:
    return [DecodeRow(prompt_ids=p, budget=b, seed=s, temperature=1.0, top_k=20) for p, b, s in zip(prompts, budgets, seeds)]


def test_a_row_decodes_the_same_alone_and_beside_rows_that_finish_first(tiny_lm) -> None:
    model, tok = tiny_lm
    prompts = [tok("a longer prompt here", add_special_tokens=False)["input_ids"],
               tok("hi", add_special_tokens=False)["input_ids"],
               tok("x", add_special_tokens=False)["input_ids"]]
    together = _rows(prompts, [12, 2, 5], [7, 8, 9])
    decode(model, tok, together, eos_token_ids=frozenset(), pad_token_id=0)
    for row, prompt, budget, seed in zip(together, prompts, [12, 2, 5], [7, 8, 9]):
        (alone,) = _rows([prompt], [budget], [seed])
        decode(model, tok, [alone], eos_token_ids=frozenset(), pad_token_id=0)
        assert row.token_ids == alone.token_ids and len(row.token_ids) == budget
        assert row.finish_reason == "length"
        assert torch.allclose(torch.tensor(row.logprobs), torch.tensor(alone.logprobs), atol=1e-4)


def test_the_chat_client_and_the_grpo_sampler_draw_the_same_tokens(tiny_lm) -> None:
    from drgym.agents.grpo.rollout import HFGenerator

    model, tok = tiny_lm
    client = TransformersChatClient(model, tok, max_new_tokens=10, temperature=1.0)
    chats = [[{"role": "user", "content": "Who wrote Hamlet?"}], [{"role": "user", "content": "hi"}]]
    completions = client.generate_batch(chats, seed=11, stop=[])
    sampler = HFGenerator(model, tok, stop=[])
    samples = sampler.generate([client.encode(c) for c in chats], [10, 10], temperature=1.0, seeds=[11, 11])
    assert [c.token_ids for c in completions] == [s.token_ids for s in samples]
