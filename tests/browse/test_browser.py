from __future__ import annotations

import json
import logging
import time

import pytest

from drgym.browse import Browser, BrowsingAgent, EpisodeMemory, LexicalReader
from drgym.document import Document
from drgym.errors import BlockedURLError, ConfigError, ReplayMissError
from drgym.search.base import SearchBackend

from .doubles import DictBackend, ScriptedClient

QUESTION = "Who designed the Eiffel Tower?"


def _docs(n: int) -> dict[str, Document]:
    return {
        f"https://site.example/{i}": Document(
            url=f"https://site.example/{i}", title=f"Page {i}", content=f"Page {i}: the tower was designed by Koechlin."
        )
        for i in range(n)
    }


async def _browse(browser: Browser, urls: list[str], memory: EpisodeMemory | None = None, **subq: str):
    return await browser.browse(urls, question=QUESTION, subquestions=subq, memory=memory or EpisodeMemory())


def test_dict_backend_is_a_search_backend():
    assert isinstance(DictBackend({}), SearchBackend)


async def test_errors_become_notes_and_order_is_kept():
    docs = _docs(2)
    backend = DictBackend(
        docs,
        failures={
            "https://blocked.example/": BlockedURLError("refused: https://blocked.example/ resolves to 127.0.0.1"),
            "https://replay.example/": ReplayMissError("no recording for https://replay.example/"),
        },
    )
    urls = ["https://site.example/0", "https://blocked.example/", "https://missing.example/",
            "https://replay.example/", "https://site.example/1"]
    memory = EpisodeMemory()
    pages = await _browse(Browser(backend, LexicalReader(), max_pages_per_call=10), urls, memory)
    assert [p.url for p in pages] == urls
    assert pages[0].notes == docs["https://site.example/0"].content and pages[0].error is None
    assert pages[1].error == "refused: https://blocked.example/ resolves to 127.0.0.1" and pages[1].notes == ""
    assert pages[2].error == "HTTP 404 for https://missing.example/"
    assert pages[3].error == "no recording for https://replay.example/"
    assert pages[4].title == "Page 1" and pages[4].error is None
    assert memory.urls() == ["https://site.example/0", "https://site.example/1"]
    assert all(p.elapsed_s >= 0 for p in pages)


async def test_unexpected_exception_is_logged_and_contained(caplog):
    backend = DictBackend(_docs(1), failures={"https://bug.example/": KeyError("boom")})
    with caplog.at_level(logging.WARNING, logger="drgym.browse.browser"):
        pages = await _browse(Browser(backend, LexicalReader()), ["https://bug.example/", "https://site.example/0"])
    assert pages[0].error == "unexpected error while reading the page: KeyError('boom')"
    assert pages[1].error is None
    assert "reading https://bug.example/ failed unexpectedly" in caplog.text


async def test_time_budget_per_page():
    backend = DictBackend(_docs(2), delays={"https://site.example/1": 30.0})
    browser = Browser(backend, LexicalReader(), time_budget_s=0.3)
    start = time.monotonic()
    pages = await _browse(browser, ["https://site.example/0", "https://site.example/1"])
    assert time.monotonic() - start < 5
    assert pages[0].error is None
    assert pages[1].error == "timed out after 0.3s (the time budget per page); reading the page was stopped" and pages[1].notes == ""
    assert 0.3 <= pages[1].elapsed_s < 5


async def test_timeout_keeps_the_notes_gathered_before_it():
    words = " ".join(f"w{i}" for i in range(400))
    doc = Document(url="https://final.example/page", title="Long", content=words)
    backend = DictBackend({"https://site.example/long": doc})
    reply = json.dumps({"new_information": "Designed by Koechlin and Nouguier.", "read_more": True})
    client = ScriptedClient([reply, reply], delays=[0.0, 30.0])
    reader = BrowsingAgent(client, segment_chars=300, time_budget_s=60)
    memory = EpisodeMemory()
    memory.add("https://final.example/page", "from an earlier call")
    pages = await _browse(Browser(backend, reader, time_budget_s=0.5), ["https://site.example/long"], memory)
    assert pages[0].url == "https://site.example/long" and pages[0].title == "Long"
    assert pages[0].error == "timed out after 0.5s (the time budget per page); reading the page was stopped"
    assert pages[0].notes == "Designed by Koechlin and Nouguier."


async def test_max_pages_per_call_skips_the_rest():
    backend = DictBackend(_docs(7))
    urls = list(backend.docs)
    pages = await _browse(Browser(backend, LexicalReader(), max_pages_per_call=3), urls)
    assert [p.url for p in pages] == urls
    assert backend.opened == urls[:3]
    assert all(p.error is None for p in pages[:3])
    assert all(p.error == "skipped: at most 3 pages are read per call" for p in pages[3:])


async def test_duplicates_are_read_once():
    backend = DictBackend(_docs(2))
    urls = ["https://site.example/0", "https://site.example/0", " https://site.example/0 ", "https://site.example/1"]
    pages = await _browse(Browser(backend, LexicalReader(), max_pages_per_call=2), urls)
    assert [p.url for p in pages] == ["https://site.example/0", "https://site.example/1"]
    assert sorted(backend.opened) == ["https://site.example/0", "https://site.example/1"]


async def test_concurrency_is_bounded():
    backend = DictBackend(_docs(8), default_delay=0.1)
    browser = Browser(backend, LexicalReader(), max_pages_per_call=8, max_concurrency=3)
    start = time.monotonic()
    pages = await _browse(browser, list(backend.docs))
    assert backend.max_in_flight == 3
    assert all(p.error is None for p in pages)
    assert time.monotonic() - start >= 0.3  # 8 pages, 3 at a time, 0.1 s each: at least 3 rounds


async def test_subquestion_and_requested_url_reach_the_reader():
    doc = Document(url="https://redirected.example/final", title="T", content="Koechlin drew the first sketch.")
    backend = DictBackend({"https://short.example/x": doc})
    client = ScriptedClient([json.dumps({"new_information": "Koechlin", "read_more": False})])
    pages = await Browser(backend, BrowsingAgent(client)).browse(
        ["https://short.example/x"], question=QUESTION,
        subquestions={"https://short.example/x": "eiffel tower designer"}, memory=EpisodeMemory(),
    )
    assert pages[0].url == "https://short.example/x" and pages[0].notes == "Koechlin"
    assert "Sub-question (the search query that led to this page): eiffel tower designer" in client.user_prompt(0)


async def test_empty_and_blank_urls():
    backend = DictBackend({})
    browser = Browser(backend, LexicalReader())
    assert await _browse(browser, []) == []
    pages = await _browse(browser, ["  "])
    assert pages[0].error == "empty URL" and backend.opened == []


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="max_pages_per_call must be at least 1, got 0"):
        Browser(DictBackend({}), LexicalReader(), max_pages_per_call=0)
    with pytest.raises(ConfigError, match="time_budget_s must be positive, got -1"):
        Browser(DictBackend({}), LexicalReader(), time_budget_s=-1)
    with pytest.raises(ConfigError, match="max_concurrency must be at least 1, got 0"):
        Browser(DictBackend({}), LexicalReader(), max_concurrency=0)
