"""The browsing agent through the real stack: OpenAI-compatible HTTP client -> loopback server -> tiny model.

The tiny model has random weights, so its replies are byte garbage: these tests check that the mechanics
(prompting, HTTP, parsing, stopping, memory, error paths) hold up under such output, not what it says.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from aiohttp.test_utils import TestServer

from drgym.browse import Browser, BrowsingAgent, EpisodeMemory
from drgym.document import Document
from drgym.llm.local import TransformersChatClient
from drgym.llm.openai import OpenAIChatClient
from drgym.llm.server import create_app
from drgym.llm.tiny import tiny_causal_lm
from drgym.retry import RetryPolicy

from .doubles import DictBackend

QUESTION = "Who designed the Eiffel Tower?"
PAGE = "\n\n".join(f"Paragraph {i}: Maurice Koechlin and Emile Nouguier drew the first design." for i in range(24))


async def _browse_through_server(config: dict | None = None):
    model, tokenizer = tiny_causal_lm(seed=0, **(config or {}))
    local = TransformersChatClient(model, tokenizer, seed=0)
    docs = {
        f"https://site.example/{i}": Document(url=f"https://site.example/{i}", title=f"Page {i}", content=PAGE)
        for i in range(2)
    }
    memory = EpisodeMemory()
    async with TestServer(create_app(local, "tiny")) as server:
        chat = OpenAIChatClient(str(server.make_url("/v1")), "tiny", retry=RetryPolicy(max_attempts=1))
        try:
            agent = BrowsingAgent(chat, segment_chars=300, max_segments=3, max_tokens=12, time_budget_s=60)
            pages = await Browser(DictBackend(docs), agent, time_budget_s=120).browse(
                [*docs, "https://site.example/missing"],
                question=QUESTION,
                subquestions={url: "eiffel tower designer" for url in docs},
                memory=memory,
            )
        finally:
            await chat.aclose()
    return pages, memory


async def test_garbage_replies_do_not_break_reading():
    pages, memory = await _browse_through_server()
    assert [p.url for p in pages] == ["https://site.example/0", "https://site.example/1", "https://site.example/missing"]
    for page in pages[:2]:
        assert page.error is None
        assert page.segments_total > 3
        assert 1 <= page.segments_read <= 3  # a non-JSON reply is kept as text and ends the page
        assert len(page.notes) <= 2000
        assert memory.notes_for(page.url) == page.notes
    assert pages[2].error == "HTTP 404 for https://site.example/missing"


async def test_prompt_too_long_for_the_model_becomes_the_page_error():
    pages, memory = await _browse_through_server({"max_position_embeddings": 256})
    for page in pages[:2]:
        assert page.segments_read == 0 and page.notes == ""
        assert page.error is not None
        assert page.error.startswith("the reading model failed on part 1 of "), page.error
        assert "context" in page.error
    assert memory.urls() == []
