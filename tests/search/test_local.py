from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from drgym.data.records import Passage
from drgym.document import Document
from drgym.errors import (
    ConfigError,
    DataError,
    DependencyNotInstalled,
    FetchError,
    IndexCorruptError,
    ToolError,
)
from drgym.search.base import SearchBackend
from drgym.search.local import BM25Backend, load_index

LONG_TEXT = (
    "The observatory was planned for many years before any money was found. "
    "Several committees argued about the site, the size of the dome and the cost of the road. "
    "Local farmers sold the land in the end, after a long dispute about grazing rights. "
    "Builders from the valley carried every stone up the slope by mule. "
    "Its great refractor lens was ground by the instrument maker Pellam Orwick in 1851. "
    "The telescope is still used by students on clear winter nights."
)

PASSAGES = [
    Passage(
        "kell", "Kellport", "Kellport is a harbour town at the mouth of the river, founded 1612.", "a.json"
    ),
    Passage("brew", "Brewing", "Zymurgy is the study of fermentation in brewing and winemaking.", "a.json"),
    Passage("z-dup", "Lantern festival", "The quiet lantern festival happens every spring.", "b.json"),
    Passage("zurich", "Zürich", "Zürich is the largest city in Switzerland, on Lake Zürich.", "c.json"),
    Passage("tokyo", "東京", "東京は日本の首都です。 Tokyo is the capital of Japan.", "c.json"),
    Passage("a-dup", "Lantern festival", "The quiet lantern festival happens every spring.", "b.json"),
    Passage("pi", "Pi", "Pi is about 3.14 and the town counted 1,000 residents.", "d.json"),
    Passage("obs", "Tirrow Observatory", LONG_TEXT, "e.json"),
    Passage("river", "River Sable", "The river flows from the lake to the sea past the harbour.", "f.json"),
    Passage("odd/id ?#é", "Odd id", "A passage whose id needs escaping in a URL: quokka.", "g.json"),
    Passage("who", "The Who", "The Who are an English rock band formed in London in 1964.", "h.json"),
    Passage("empty", "", "", "i.json"),
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DRGYM_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def backend(home: Path) -> BM25Backend:
    return BM25Backend(PASSAGES, corpus="test")


def _ids(results) -> list[str]:
    return [r.extras["passage_id"] for r in results]


def _index_dir(backend: BM25Backend) -> Path:
    assert backend.index_info.path is not None
    return backend.index_info.path


# -- ranking ------------------------------------------------------------------------------------------


async def test_rare_term_ranks_its_passage_first(backend: BM25Backend) -> None:
    results = await backend.search("zymurgy and the harbour", k=5)
    assert _ids(results)[0] == "brew"
    assert {"kell", "river"} <= set(_ids(results))
    top = results[0]
    assert top.title == "Brewing"
    assert top.url == "https://local.drgym/test/brew"
    assert top.extras["source"] == "a.json"
    assert [r.extras["rank"] for r in results] == list(range(1, len(results) + 1))
    scores = [r.extras["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


async def test_k_is_respected_and_only_matches_are_returned(backend: BM25Backend) -> None:
    assert len(await backend.search("the harbour river lake town", k=1)) == 1
    assert len(await backend.search("the harbour river lake town", k=2)) == 2
    assert await backend.search("harbour", k=0) == []
    every = await backend.search("harbour", k=1000)
    assert set(_ids(every)) == {"kell", "river"}  # never padded with passages that do not match


async def test_ties_are_broken_by_corpus_order(backend: BM25Backend) -> None:
    results = await backend.search("lantern festival", k=10)
    assert _ids(results)[:2] == ["z-dup", "a-dup"]  # corpus order, not id order
    assert results[0].extras["score"] == results[1].extras["score"]
    assert _ids(await backend.search("lantern festival", k=1)) == ["z-dup"]


async def test_scores_are_lucene_bm25(backend: BM25Backend) -> None:
    # Independent computation for a one-term query, as Lucene >= 8 scores it (no constant (k1 + 1) factor):
    # idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), idf = ln(1 + (N - df + 0.5) / (df + 0.5)).
    tok = backend._tokenizer
    lengths = [len(tok.tokenize(f"{p.title}\n{p.text}")) for p in PASSAGES]
    avgdl = sum(lengths) / len(lengths)
    k1, b, n = 1.5, 0.75, len(PASSAGES)
    docs = [i for i, p in enumerate(PASSAGES) if "harbour" in tok.tokenize(p.text)]
    idf = math.log(1 + (n - len(docs) + 0.5) / (len(docs) + 0.5))
    expected = {PASSAGES[i].id: idf * 1 / (1 + k1 * (1 - b + b * lengths[i] / avgdl)) for i in docs}
    results = await backend.search("harbour")
    assert {r.extras["passage_id"]: r.extras["score"] for r in results} == pytest.approx(expected, rel=1e-5)


async def test_scores_match_bm25s_retrieve(backend: BM25Backend) -> None:
    query = "quiet harbour town river festival"
    terms = backend._tokenizer.query_terms(query)
    retriever = backend._retriever
    _docs, ref_scores = retriever.retrieve([terms], k=5, show_progress=False)
    ours = [r.extras["score"] for r in await backend.search(query, k=5)]
    np.testing.assert_allclose(ours, ref_scores[0], rtol=1e-6)


async def test_search_many_equals_individual_searches(backend: BM25Backend) -> None:
    queries = ["zymurgy", "", "harbour town lake", "Zürich", "!!!"]
    together = await backend.search_many(queries, k=3)
    alone = [await backend.search(q, k=3) for q in queries]
    assert len(together) == len(queries)
    for many, one in zip(together, alone):
        assert [(r.url, r.title, r.snippet, r.extras) for r in many] == [
            (r.url, r.title, r.snippet, r.extras) for r in one
        ]
    assert await backend.search_many([], k=3) == []


async def test_search_runs_off_the_event_loop(backend: BM25Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    threads = _thread_spy(backend, monkeypatch)
    results = await asyncio.gather(*(backend.search("harbour") for _ in range(4)))
    assert all(_ids(r)[0] in {"kell", "river"} for r in results)
    assert threads and threading.get_ident() not in threads


def _thread_spy(backend: BM25Backend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    threads: list[int] = []
    original = backend._search_sync

    def spy(queries, k):
        threads.append(threading.get_ident())
        return original(queries, k)

    monkeypatch.setattr(backend, "_search_sync", spy)
    return threads


# -- text handling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Zurich", "zurich"),  # diacritics folded
        ("ZÜRICH", "zurich"),
        ("東京", "tokyo"),  # CJK split into characters
        ("1000 residents", "pi"),  # "1,000" indexed as 1000
        ("3.14", "pi"),
        ("The Who", "who"),  # stopwords dropped, the rest searched
        ("the who", "who"),
    ],
)
async def test_non_ascii_numbers_and_stopwords(backend: BM25Backend, query: str, expected: str) -> None:
    assert _ids(await backend.search(query))[0] == expected


async def test_query_of_only_stopwords_falls_back_to_them(backend: BM25Backend) -> None:
    results = await backend.search("the", k=20)
    texts = [backend.get_passage(pid).text.lower() for pid in _ids(results)]
    assert texts and all(re.search(r"\bthe\b", t) for t in texts)


@pytest.mark.parametrize(
    "query",
    ["", "   \n\t ", "!!! ??? ...", "\x00\x01\x02\x1b[31m", "\ud800\udfff", "🙂🙂", "a" * 10, "\u200b\u200d"],
)
async def test_queries_without_matching_terms_give_no_results(backend: BM25Backend, query: str) -> None:
    assert await backend.search(query) == []


async def test_huge_query_is_cut_not_fatal(backend: BM25Backend) -> None:
    assert _ids(await backend.search("zymurgy " * 131072))[0] == "brew"  # 1 MiB
    assert await backend.search("\x00" * (1 << 20)) == []
    assert len(await backend.search("".join(chr(c) for c in range(0x20, 0x3000)) * 40)) <= 10


async def test_snippet_shows_the_best_sentence_cut_at_a_word(backend: BM25Backend) -> None:
    (result,) = await backend.search("refractor lens Orwick", k=1)
    assert result.extras["passage_id"] == "obs"
    assert "Pellam Orwick" in result.snippet
    assert result.snippet.startswith("… ")
    assert len(result.snippet) <= 305
    body = result.snippet.removeprefix("… ").removesuffix(" …")
    assert body in LONG_TEXT
    end = LONG_TEXT.index(body) + len(body)
    assert end == len(LONG_TEXT) or LONG_TEXT[end] == " "  # cut between words


async def test_snippet_is_passage_start_when_only_the_title_matches(backend: BM25Backend) -> None:
    (result,) = await backend.search("Tirrow", k=1)
    assert result.extras["passage_id"] == "obs"
    assert result.snippet.endswith(" …") and LONG_TEXT.startswith(result.snippet.removesuffix(" …"))
    short = await backend.search("zymurgy", k=1)
    assert short[0].snippet == PASSAGES[1].text


# -- open ---------------------------------------------------------------------------------------------


async def test_urls_round_trip_through_open(backend: BM25Backend) -> None:
    results = await backend.search("quokka zymurgy Zürich 東京", k=10)
    assert {"odd/id ?#é", "brew", "zurich", "tokyo"} <= set(_ids(results))
    for result in results:
        doc = await backend.open(result.url)
        passage = backend.get_passage(result.extras["passage_id"])
        assert isinstance(doc, Document)
        assert doc.url == result.url
        assert doc.title == passage.title
        assert doc.content == f"# {passage.title}\n\n{passage.text}"
        assert doc.content_type == "text/markdown"
        assert doc.source == passage.source
    odd = backend.url_for("odd/id ?#é")
    assert odd.startswith("https://local.drgym/test/") and " " not in odd and "#" not in odd


async def test_open_accepts_harmless_variants(backend: BM25Backend) -> None:
    for url in (
        "http://local.drgym/test/brew",
        "https://LOCAL.DRGYM/test/brew/",
        " https://local.drgym/test/brew",
    ):
        assert (await backend.open(url)).title == "Brewing"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.org/test/brew", "not a passage of the local corpus"),
        ("ftp://local.drgym/test/brew", "not a passage of the local corpus"),
        ("https://local.drgym/other/brew", "names corpus 'other'"),
        ("https://local.drgym/test/nope", "has no passage with id 'nope'"),
        ("https://local.drgym/test/", "has no passage with id ''"),
        ("https://local.drgym/", "names corpus ''"),
        ("not a url at all", "not a passage of the local corpus"),
        ("http://[::1", "not a valid URL"),
        ("https://local.drgym/test/" + "x" * 100_000, "has no passage"),
    ],
)
async def test_open_rejects_foreign_or_unknown_urls(backend: BM25Backend, url: str, message: str) -> None:
    with pytest.raises(FetchError, match=re.escape(message)):
        await backend.open(url)


async def test_open_rejects_non_strings(backend: BM25Backend) -> None:
    with pytest.raises(FetchError, match="must be a string"):
        await backend.open(None)  # type: ignore[arg-type]


def test_get_passage(backend: BM25Backend) -> None:
    assert backend.get_passage("zurich") is PASSAGES[3]
    with pytest.raises(KeyError, match="no passage with id 'missing' in corpus 'test'"):
        backend.get_passage("missing")


# -- index cache --------------------------------------------------------------------------------------


def test_index_is_cached_under_data_home_and_reused(home: Path) -> None:
    first = BM25Backend(PASSAGES, corpus="test")
    path = _index_dir(first)
    assert first.index_info.built
    assert path.parent == home / "indexes" and path.name == f"test-{first.index_info.fingerprint}"
    meta = path / "drgym-index.json"
    stamp = meta.stat().st_mtime_ns
    second = BM25Backend(PASSAGES, corpus="test")
    assert not second.index_info.built
    assert second.index_info.path == path
    assert meta.stat().st_mtime_ns == stamp
    assert [p.name for p in (home / "indexes").iterdir()] == [path.name]  # no temporary dirs left behind


async def test_changed_corpus_gets_a_new_index(home: Path) -> None:
    first = BM25Backend(PASSAGES, corpus="test")
    edited = [
        *PASSAGES[:1],
        Passage("brew", "Brewing", "Brewing beer, no rare words here.", "x"),
        *PASSAGES[2:],
    ]
    second = BM25Backend(edited, corpus="test")
    assert second.index_info.built
    assert second.index_info.fingerprint != first.index_info.fingerprint
    assert _index_dir(first).is_dir() and _index_dir(second).is_dir()
    assert await second.search("zymurgy") == []
    reordered = BM25Backend(list(reversed(PASSAGES)), corpus="test")
    assert reordered.index_info.built  # order decides tie-breaks, so it is part of the fingerprint


def test_settings_are_part_of_the_fingerprint(home: Path) -> None:
    plain = BM25Backend(PASSAGES, corpus="test")
    tuned = BM25Backend(PASSAGES, corpus="test", k1=1.2, b=0.5)
    assert tuned.index_info.built and tuned.index_info.fingerprint != plain.index_info.fingerprint


def test_rebuild_flag_forces_a_fresh_index(home: Path) -> None:
    first = BM25Backend(PASSAGES, corpus="test")
    again = BM25Backend(PASSAGES, corpus="test", rebuild=True)
    assert again.index_info.built and again.index_info.path == first.index_info.path
    assert not BM25Backend(PASSAGES, corpus="test").index_info.built


def _truncate(path: Path) -> None:
    file = path / "data.csc.index.npy"
    file.write_bytes(file.read_bytes()[:-7])


def _garble(path: Path) -> None:
    file = path / "indices.csc.index.npy"
    raw = bytearray(file.read_bytes())
    raw[-4:] = b"\xff\xff\xff\x7f"
    file.write_bytes(bytes(raw))


def _drop_vocab(path: Path) -> None:
    (path / "vocab.index.json").unlink()


def _bad_meta(path: Path) -> None:
    (path / "drgym-index.json").write_text('{"format": 1, "files": ')


def _no_meta(path: Path) -> None:
    (path / "drgym-index.json").unlink()


def _foreign_fingerprint(path: Path) -> None:
    meta = json.loads((path / "drgym-index.json").read_text())
    meta["fingerprint"] = "0" * 20
    (path / "drgym-index.json").write_text(json.dumps(meta))


def _not_a_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
    path.write_text("junk")


DAMAGE = {
    "truncated data": (_truncate, "data.csc.index.npy has"),
    "garbled indices": (_garble, "indices.csc.index.npy fails its sha256 check"),
    "missing vocab": (_drop_vocab, "vocab.index.json is missing"),
    "garbled meta": (_bad_meta, "drgym-index.json is unreadable"),
    "missing meta": (_no_meta, "drgym-index.json is missing"),
    "other corpus": (_foreign_fingerprint, "it records fingerprint='000"),
    "file not dir": (_not_a_dir, "drgym-index.json is unreadable"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_corrupt_index_raises_a_clear_error(home: Path, damage: str) -> None:
    backend = BM25Backend(PASSAGES, corpus="test")
    path, info = _index_dir(backend), backend.index_info
    harm, why = DAMAGE[damage]
    harm(path)
    with pytest.raises(IndexCorruptError, match=re.escape(why)) as caught:
        load_index(path, fingerprint=info.fingerprint, num_docs=len(PASSAGES))
    message = str(caught.value)
    assert str(path) in message and "rebuild=True" in message and "Delete that directory" in message


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_corrupt_index_is_rebuilt_with_a_warning(
    home: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = BM25Backend(PASSAGES, corpus="test")
    expected = await first.search("harbour zymurgy lantern")
    DAMAGE[damage][0](_index_dir(first))
    with caplog.at_level(logging.WARNING, logger="drgym.search.local"):
        second = BM25Backend(PASSAGES, corpus="test")
    assert second.index_info.built and second.index_info.path == first.index_info.path
    assert any("unusable" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    got = await second.search("harbour zymurgy lantern")
    assert [(r.url, r.extras) for r in got] == [(r.url, r.extras) for r in expected]
    assert not BM25Backend(PASSAGES, corpus="test").index_info.built  # the repaired copy loads cleanly


async def test_unwritable_cache_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="drgym.search.local"):
        backend = BM25Backend(PASSAGES, corpus="test", index_dir=blocker / "indexes")
    assert backend.index_info.built and backend.index_info.path is None
    assert "keeping it in memory only" in caplog.text
    assert _ids(await backend.search("zymurgy"))[0] == "brew"


def test_cache_can_be_turned_off(tmp_path: Path) -> None:
    backend = BM25Backend(PASSAGES, corpus="test", index_dir=tmp_path, cache=False)
    assert backend.index_info.path is None and list(tmp_path.iterdir()) == []


# -- bad input ----------------------------------------------------------------------------------------


async def test_bad_search_arguments_raise_tool_errors(backend: BM25Backend) -> None:
    with pytest.raises(ToolError, match="a search query must be a string, got int"):
        await backend.search(42)  # type: ignore[arg-type]
    with pytest.raises(ToolError, match="k must be a non-negative integer"):
        await backend.search("harbour", k=-1)
    with pytest.raises(ToolError, match="takes a list of queries"):
        await backend.search_many("harbour")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("passages", "error", "message"),
    [
        ([], DataError, "has no passages"),
        ([PASSAGES[0], PASSAGES[0]], DataError, "two passages with id 'kell'"),
        ([PASSAGES[0], ("x", "y")], DataError, "item 1 is a tuple, not a Passage"),
        ([Passage("x", "t", None)], DataError, "non-string id, title, text or source"),  # type: ignore[arg-type]
        ([Passage("x", "", ""), Passage("y", "...", "!!")], DataError, "no searchable text"),
    ],
)
def test_bad_corpora_are_refused(home: Path, passages: list, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        BM25Backend(passages, corpus="test")


def test_bad_settings_are_refused(home: Path) -> None:
    with pytest.raises(ConfigError, match="corpus must be a non-empty name"):
        BM25Backend(PASSAGES, corpus=" ")
    with pytest.raises(ConfigError, match="0 <= b <= 1"):
        BM25Backend(PASSAGES, corpus="test", b=2.0)


def test_stemming_needs_pystemmer(home: Path) -> None:
    try:
        import Stemmer  # noqa: F401
    except ImportError:
        with pytest.raises(DependencyNotInstalled, match="PyStemmer is not installed"):
            BM25Backend(PASSAGES, corpus="test", stem=True)
    else:
        backend = BM25Backend(PASSAGES, corpus="test", stem=True)
        assert backend.index_info.fingerprint != BM25Backend(PASSAGES, corpus="test").index_info.fingerprint


async def test_protocol_and_close(backend: BM25Backend) -> None:
    assert isinstance(backend, SearchBackend) and backend.name == "local"
    assert len(backend) == len(PASSAGES)
    await backend.aclose()
    await backend.aclose()


# -- named corpora ------------------------------------------------------------------------------------


async def test_from_corpus_demo(home: Path) -> None:
    backend = BM25Backend.from_corpus("demo")
    assert backend.corpus == "demo" and backend.index_info.built
    assert not BM25Backend.from_corpus("demo").index_info.built
    results = await backend.search("who invented the tidal clock", k=3)
    assert results and results[0].url.startswith("https://local.drgym/demo/")
    doc = await backend.open(results[0].url)
    assert doc.title == results[0].title and "tidal clock" in doc.content.lower()
