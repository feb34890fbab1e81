"""Corpora: the offline ``wiki-local`` Wikipedia corpus, merged from the context sets and corpora files.

Passage ids are a hash of title and text, so an index built today still points at the same passages after
the files are reordered or a new file is merged in. Each passage keeps the file it came from (attribution,
as CC BY-SA asks).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from drgym.data._io import read_json as _json
from drgym.data._io import read_jsonl as _jsonl
from drgym.data.records import Passage
from drgym.errors import DataError

__all__ = [
    "build_wiki_local",
    "dedup_passages",
    "normalise_text",
    "normalise_title",
    "passage_id",
    "read_passages",
]

Pair = tuple[str, str]


_SPACE_RUN = re.compile(r"[ \t\r\f\v]+")  # ASCII whitespace other than a newline
_LINE_BREAK = re.compile(r" ?\n[ \n]*")  # a newline with the spaces and blank lines around it
_ODD_SPACE = ("  ", "\n", "\t", "\r", "\f", "\v")


def normalise_title(title: str) -> str:
    """A title on one line, runs of whitespace collapsed."""
    return " ".join(title.split())


def normalise_text(text: str) -> str:
    """Runs of ASCII spaces collapsed and blank lines dropped; line breaks (paragraphs) kept."""
    if text[:1] != " " and text[-1:] != " " and not any(odd in text for odd in _ODD_SPACE):
        return text  # the common case, decided by substring scans rather than a regex pass
    return _LINE_BREAK.sub("\n", _SPACE_RUN.sub(" ", text)).strip(" \n")


def _hash(title: str, text: str) -> str:
    return hashlib.sha1(f"{title}\n{text}".encode(), usedforsecurity=False).hexdigest()[:12]


def passage_id(title: str, text: str) -> str:
    """Stable 12-hex id of a passage: sha1 of its normalised title and text.

    Passages store the normalised forms, so equal ids mean equal passages whatever order files merge in.
    """
    return _hash(normalise_title(title), normalise_text(text))


def dedup_passages(pairs: Iterable[tuple[str, str, str]]) -> list[Passage]:
    """Turn ``(title, text, source)`` triples into normalised passages, keeping the first of each."""
    seen: set[str] = set()
    passages: list[Passage] = []
    for title, text, source in pairs:
        title, text = normalise_title(title), normalise_text(text)
        if not title or not text:
            continue
        pid = _hash(title, text)
        if pid in seen:
            continue
        seen.add(pid)
        passages.append(Passage(id=pid, title=title, text=text, source=source))
    return passages




def _hotpot_ircot(path: Path) -> Iterator[Pair]:
    for row in _jsonl(path):
        for ctx in row["contexts"]:
            yield ctx["title"], ctx["paragraph_text"]


def _musique(path: Path) -> Iterator[Pair]:
    for row in _json(path):
        for para in row["paragraphs"]:
            yield para["title"], para["paragraph_text"]


def _popqa(path: Path) -> Iterator[Pair]:
    for row in _json(path):
        for para in row["paragraphs"]:
            yield para["title"], para["text"]


def _hotpot_context(path: Path) -> Iterator[Pair]:
    # Original HotpotQA schema: context = [[title, [sentence, ...]], ...]; sentences carry their own spaces.
    for row in _json(path):
        for title, sentences in row["context"]:
            yield title, "".join(sentences)


def _title_to_sentences(path: Path) -> Iterator[Pair]:
    for title, sentences in _json(path).items():
        yield title, "".join(sentences)


def _title_text_list(path: Path) -> Iterator[Pair]:
    for row in _json(path):
        yield row["title"], row["text"]


def _flashrag(path: Path) -> Iterator[Pair]:
    # DPR wiki-18 chunks: contents = '"Title"\ntext' (the quotes are missing on some rows).
    for row in _jsonl(path):
        title, _, text = row["contents"].partition("\n")
        if len(title) >= 2 and title[0] == title[-1] == '"':
            title = title[1:-1]
        yield title, text


def _vital(path: Path) -> Iterator[Pair]:
    for key, entry in _json(path).items():
        yield entry.get("title") or key, entry["extract"]


_PARSERS: dict[str, Callable[[Path], Iterator[Pair]]] = {
    "contexts/hotpotqa_dev500_ircot_contexts.jsonl": _hotpot_ircot,
    "contexts/musique_dev100_paragraphs.json": _musique,
    "contexts/musique_train100_paragraphs.json": _musique,
    "contexts/popqa_1000_paragraphs.json": _popqa,
    "contexts/hotpotqa_train100_context.json": _hotpot_context,
    "contexts/hotpotqa_train100_corpus.json": _title_to_sentences,
    "contexts/musique_train100_corpus.json": _title_text_list,
    "corpora/hipporag_2wikimultihopqa_dev1000_corpus.json": _title_text_list,
    "corpora/neuropath_2wikimultihopqa_sft_corpus.json": _title_text_list,
    "corpora/flashrag_wiki18_sample_1000.jsonl": _flashrag,
    "corpora/wikipedia_vital_articles_summaries_en.json": _vital,
}


def read_passages(relpath: str, path: Path) -> list[tuple[str, str, str]]:
    """All ``(title, text, relpath)`` triples of one registered file, in file order."""
    parser = _PARSERS.get(relpath)
    if parser is None:
        raise DataError(f"no passage reader for {relpath}")
    try:
        return [(title, text, relpath) for title, text in parser(path)]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"cannot read passages from {path} ({relpath}): {type(exc).__name__}: {exc}") from exc


def build_wiki_local(files: Iterable[tuple[str, Path]]) -> list[Passage]:
    """Merge the given ``(relpath, path)`` files, in order, into one de-duplicated passage list."""
    return dedup_passages(triple for relpath, path in files for triple in read_passages(relpath, path))
