"""English-first tokenizer shared by the BM25 index and its queries.

Wikipedia paragraphs are mostly English but full of numbers (``1,000``, ``3.14``, ``1990s``) and non-ASCII
names (``Zürich``, ``Dvořák``, ``東京``). The tokenizer therefore lowercases with Unicode case folding, folds
Latin diacritics so a query typed without accents still matches, keeps numbers whole, splits CJK text into
characters (it has no spaces) and joins apostrophes (``O'Neill`` → ``oneill``, possessive ``'s`` dropped).

Stopwords are *not* removed from documents: they are dropped from queries only (see :func:`query_terms`), so a
query made only of stopwords ("The Who") can still fall back to them. Stemming is off unless asked for, because
an index must be reproducible on machines with and without an optional stemmer installed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable

from drgym.errors import DependencyNotInstalled

__all__ = ["STOPWORDS", "Tokenizer"]

_VERSION = 1

# Lucene's English stopword list (the one bm25s ships as STOPWORDS_EN), written out so the index format does
# not change when the library's list does.
STOPWORDS: frozenset[str] = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with",
})  # fmt: skip


def _mark_class() -> str:
    """A regex class of every combining mark in the BMP (Python's ``\\w`` excludes them, splitting e.g. Hindi)."""
    ranges: list[list[int]] = []
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


_MARKS = _mark_class()
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")
# Each pattern starts with its rare character and checks the context behind it afterwards: Python's regex
# engine then scans for that character quickly instead of trying a lookbehind at every position.
_LATIN_DIACRITICS = re.compile(r"[\u0300-\u036f](?<=[a-z][\u0300-\u036f])[\u0300-\u036f]*")
_POSSESSIVE = re.compile(r"['\u2019]s\b(?<=\w['\u2019]s)")
_INNER_APOSTROPHE = re.compile(r"['\u2019](?<=\w['\u2019])(?=\w)")
_THOUSANDS = re.compile(r",(?=\d{3}(?!\d))(?<=\d,)")
# Underscores are turned into spaces first, so \w here means a letter or a digit (plus combining marks).
_TOKEN = re.compile(rf"\d+(?:\.\d+)+|\w[\w{_MARKS}]*")

# Letters that carry no Unicode decomposition but have an obvious ASCII spelling in English text.
_EXTRA_FOLDS = {"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "ħ": "h"}
_EXTRA_FOLD = re.compile(f"[{''.join(_EXTRA_FOLDS)}]")


def _load_stemmer() -> Callable[[str], str]:
    try:
        import Stemmer  # PyStemmer, optional
    except ImportError as exc:
        raise DependencyNotInstalled(
            "PyStemmer is not installed, run pip install PyStemmer (or build the index with stem=False)"
        ) from exc
    stemmer = Stemmer.Stemmer("english")
    return functools.lru_cache(maxsize=1 << 18)(stemmer.stemWord)


class Tokenizer:
    """Turn text into index terms.

    Args:
        stem: Apply the English Snowball stemmer (needs the optional ``PyStemmer`` package).

    Raises:
        DependencyNotInstalled: ``stem=True`` and PyStemmer is missing.
    """

    def __init__(self, stem: bool = False) -> None:
        self.stem = stem
        self._stem = _load_stemmer() if stem else None

    @property
    def signature(self) -> str:
        """Identifies the tokenizer's behaviour; part of the index fingerprint, so a change forces a rebuild."""
        return f"drgym-tok-v{_VERSION};stem={'english' if self.stem else 'none'}"

    def normalize(self, text: str) -> str:
        """Case-fold and fold diacritics; the text is otherwise kept as is (punctuation included)."""
        text = unicodedata.normalize("NFKC", text).casefold()
        if not text.isascii():
            # Strip diacritics only where they sit on an ASCII letter, so other scripts keep their marks.
            text = unicodedata.normalize("NFKD", text)
            text = unicodedata.normalize("NFC", _LATIN_DIACRITICS.sub("", text))
            text = _EXTRA_FOLD.sub(lambda m: _EXTRA_FOLDS[m.group()], text)
            if _CJK.search(text):
                text = _CJK.sub(r" \g<0> ", text)
        text = _INNER_APOSTROPHE.sub("", _POSSESSIVE.sub("", text))
        return _THOUSANDS.sub("", text).replace("_", " ")

    def tokenize(self, text: str) -> list[str]:
        """All terms of ``text`` in order, stopwords included (what the index stores)."""
        tokens = _TOKEN.findall(self.normalize(text))
        if self._stem is not None:
            tokens = [self._stem(t) for t in tokens]
        return tokens

    def query_terms(self, query: str) -> list[str]:
        """Terms of a query, stopwords dropped unless the query has nothing else."""
        tokens = _TOKEN.findall(self.normalize(query))
        kept = [t for t in tokens if t not in STOPWORDS] or tokens
        if self._stem is not None:
            kept = [self._stem(t) for t in kept]
        return kept
