"""Embedded BM25 search over a corpus of passages: the offline, deterministic backend.

The index (bm25s's sparse matrix of precomputed BM25 term scores) is built once per corpus and cached under
``data_home()/indexes/<corpus>-<fingerprint>/``. The fingerprint hashes every passage's id, title and text plus
the tokenizer and BM25 settings, so an edited corpus never loads a stale index. Directories are written to a
temporary name and renamed into place, and every file's size and sha256 are recorded, so a partial or garbled
cache is detected (:func:`load_index` raises :class:`~drgym.errors.IndexCorruptError`) and rebuilt with a
warning rather than giving wrong results.

Searches are scored in a worker thread (``asyncio.to_thread``), so many episodes can share one index on one
event loop without a search holding up the others.
Ranking is deterministic: equal scores are ordered by passage position in the corpus.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from drgym.data.records import Passage
from drgym.document import Document
from drgym.errors import ConfigError, DataError, FetchError, IndexCorruptError, ToolError
from drgym.search._tokenize import Tokenizer
from drgym.search.base import Result

if TYPE_CHECKING:
    import bm25s

__all__ = ["HOST", "BM25Backend", "IndexInfo", "corpus_fingerprint", "load_index"]


logger = logging.getLogger(__name__)

HOST = "local.drgym"
"""Host of the passage URLs, ``https://local.drgym/<corpus>/<passage-id>``."""

FORMAT_VERSION = 1
SNIPPET_CHARS = 300
MAX_QUERY_CHARS = 4096
"""Longer queries are cut: no search engine needs more, and a huge query would stall a worker thread."""
MAX_QUERY_TERMS = 256

_META = "drgym-index.json"
_REQUIRED_FILES = (
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
    "vocab.index.json",
    "params.index.json",
)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?。！？])\s+")


@dataclass(frozen=True)
class IndexInfo:
    """Where the index of a backend came from.

    Attributes:
        path: The cache directory, or ``None`` when caching is off (or the cache could not be written).
        fingerprint: Hash of the passages and index settings; part of the directory name.
        built: ``True`` if this construction built the index, ``False`` if it was loaded from the cache.
        seconds: Time spent building or loading (excluding the corpus itself).
    """

    path: Path | None
    fingerprint: str
    built: bool
    seconds: float


def corpus_fingerprint(passages: Sequence[Passage], *, tokenizer: str, params: dict[str, Any]) -> str:
    """Hash the passages (ids, titles, texts, in order) and the index settings into a short hex id."""
    header = {"format": FORMAT_VERSION, "tokenizer": tokenizer, "bm25": params}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    # Length-prefixed fields, so no two different corpora serialise to the same bytes; hashed in chunks of
    # passages to keep both the Python call count and the memory bounded.
    for at in range(0, len(passages), 1024):
        chunk = "".join(f"{len(x)}:{x}" for p in passages[at : at + 1024] for x in (p.id, p.title, p.text))
        digest.update(chunk.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20]


def _bm25s():
    """Import bm25s, undoing its import-time ``setLevel(DEBUG)`` so it does not flood the user's logs."""
    import bm25s

    bm25s_logger = logging.getLogger("bm25s")
    if bm25s_logger.level == logging.DEBUG:
        bm25s_logger.setLevel(logging.NOTSET)
    return bm25s


def load_index(path: str | Path, *, fingerprint: str, num_docs: int) -> bm25s.BM25:
    """Load and verify a cached index directory.

    Args:
        path: The index directory.
        fingerprint: The fingerprint the passages in hand produce; must equal the one recorded.
        num_docs: The number of passages in hand.

    Raises:
        IndexCorruptError: The directory is partial, garbled or belongs to other passages; the message names
            it and says how to rebuild.
    """
    bm25s = _bm25s()
    path = Path(path)

    def corrupt(why: str) -> IndexCorruptError:
        return IndexCorruptError(
            f"search index {path} is unusable: {why}. Delete that directory or pass rebuild=True "
            f"(BM25Backend(..., rebuild=True) or BM25Backend.from_corpus(name, rebuild=True)) to rebuild it"
        )

    try:
        meta = json.loads((path / _META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise corrupt(f"{_META} is missing (an unfinished or foreign directory)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise corrupt(f"{_META} is unreadable ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise corrupt(f"{_META} is not an index description")
    for key, want in (("format", FORMAT_VERSION), ("fingerprint", fingerprint), ("num_docs", num_docs)):
        if meta.get(key) != want:
            raise corrupt(f"it records {key}={meta.get(key)!r}, expected {want!r}")
    files: dict[str, Any] = meta["files"]
    missing = [name for name in _REQUIRED_FILES if name not in files]
    if missing:
        raise corrupt(f"{_META} does not list {', '.join(missing)}")
    for name, want in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise corrupt(f"{_META} lists a bad file name {name!r}")
        _verify_file(path / name, want, corrupt)
    try:
        retriever = bm25s.BM25.load(path, load_corpus=False, show_progress=False)
    except Exception as exc:  # bm25s raises whatever numpy/json raise on a bad file
        raise corrupt(f"bm25s could not read it ({type(exc).__name__}: {exc})") from exc
    problem = _structure_problem(retriever, num_docs)
    if problem:
        raise corrupt(problem)
    return retriever


def _verify_file(file: Path, want: Any, corrupt: Callable[[str], IndexCorruptError]) -> None:
    if not isinstance(want, dict):
        raise corrupt(f"{_META} has a bad entry for {file.name}")
    try:
        size = file.stat().st_size
    except OSError:
        raise corrupt(f"{file.name} is missing") from None
    if size != want.get("size"):
        raise corrupt(f"{file.name} has {size} bytes, expected {want.get('size')} (truncated or replaced)")
    if _sha256(file) != want.get("sha256"):
        raise corrupt(f"{file.name} fails its sha256 check (garbled)")


def _structure_problem(retriever: bm25s.BM25, num_docs: int) -> str | None:
    """Sanity checks that catch an index whose files are individually valid but do not fit together."""
    scores = retriever.scores
    data, indices, indptr = scores["data"], scores["indices"], scores["indptr"]
    vocab = retriever.vocab_dict
    if scores.get("num_docs") != num_docs:
        return f"it indexes {scores.get('num_docs')} passages, expected {num_docs}"
    if indptr.ndim != 1 or len(indptr) != len(vocab) + 1 or indptr[0] != 0:
        return "its vocabulary and score matrix disagree"
    if not (indptr[-1] == len(data) == len(indices)) or np.any(np.diff(indptr) < 0):
        return "its score matrix is malformed"
    if len(indices) and (indices.min() < 0 or indices.max() >= num_docs):
        return "its score matrix points past the last passage"
    if not np.all(np.isfinite(data)):
        return "its score matrix holds non-finite scores"
    if sorted(vocab.values()) != list(range(len(vocab))):
        return "its vocabulary ids are not contiguous"
    return None


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(file: Path) -> None:
    with file.open("rb") as fh:
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _save_index(retriever: bm25s.BM25, final: Path, meta: dict[str, Any]) -> None:
    """Write the index to a temporary sibling of ``final``, then rename it into place (atomic on POSIX)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        retriever.save(tmp, show_progress=False)
        files = {}
        for file in sorted(tmp.iterdir()):
            _fsync(file)
            files[file.name] = {"size": file.stat().st_size, "sha256": _sha256(file)}
        (tmp / _META).write_text(json.dumps({**meta, "files": files}, indent=1), encoding="utf-8")
        _fsync(tmp / _META)
        if final.exists() or final.is_symlink():  # a corrupt copy being replaced
            trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            _remove(trash)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            logger.debug("another process wrote %s first; keeping its copy", final)
    finally:
        if tmp.exists():
            _remove(tmp)


def _default_index_root() -> Path:
    from drgym.data import data_home

    return Path(data_home()) / "indexes"


def _dir_name(corpus: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", corpus)[:80] or "corpus"


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best positive scores, best first, equal scores by ascending index."""
    hits = np.flatnonzero(scores > 0)
    if hits.size > k:
        values = scores[hits]
        kth = np.partition(values, hits.size - k)[hits.size - k]
        hits = hits[values >= kth]  # keeps every tie of the k-th score, so the cut below is by index
    order = np.lexsort((hits, -scores[hits]))[:k]
    return hits[order]


def _cut(text: str, limit: int) -> str:
    """Cut ``text`` to about ``limit`` characters at a word boundary, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    end = text.rfind(" ", 0, limit + 1)
    if end < limit // 2:  # no space nearby (CJK text, one huge token): cut mid-word
        end = limit
    return text[:end].rstrip() + " …"


class BM25Backend:
    """BM25 search over an in-memory corpus of :class:`~drgym.data.records.Passage` records.

    Args:
        passages: The corpus, in a fixed order (ties in ranking go to the earlier passage).
        corpus: The corpus name; it appears in URLs (``https://local.drgym/<corpus>/<id>``) and cache paths.
        index_dir: Root of the index cache; default ``data_home()/indexes``.
        rebuild: Build the index even if a cached copy exists (and replace it).
        cache: Read and write the on-disk cache; ``False`` keeps the index in memory only.
        stem: Stem English words (needs the optional PyStemmer package; changes the fingerprint).
        k1: BM25 term-frequency saturation.
        b: BM25 document-length normalisation.

    Raises:
        DataError: The corpus is empty, has duplicate ids or non-text fields.
        ConfigError: A bad corpus name or parameter.
    """

    name = "local"

    def __init__(
        self,
        passages: Sequence[Passage],
        corpus: str = "demo",
        index_dir: str | Path | None = None,
        *,
        rebuild: bool = False,
        cache: bool = True,
        stem: bool = False,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        if not isinstance(corpus, str) or not corpus.strip():
            raise ConfigError(f"corpus must be a non-empty name, got {corpus!r}")
        if not (k1 >= 0 and 0 <= b <= 1):
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.corpus = corpus
        self._passages = tuple(passages)
        self._by_id = self._check_passages()
        self._tokenizer = Tokenizer(stem=stem)
        params = {"k1": float(k1), "b": float(b), "method": "lucene"}
        fingerprint = corpus_fingerprint(self._passages, tokenizer=self._tokenizer.signature, params=params)
        root = None if not cache else Path(index_dir) if index_dir is not None else _default_index_root()
        self._retriever, self.index_info = self._load_or_build(root, fingerprint, params, rebuild)
        self._indptr: np.ndarray = self._retriever.scores["indptr"]
        self._vocab: dict[str, int] = self._retriever.vocab_dict
        self._num_docs = len(self._passages)
        self._idf_cache: dict[str, float] = {}

    @classmethod
    def from_corpus(
        cls,
        name: str = "wiki-local",
        *,
        index_dir: str | Path | None = None,
        rebuild: bool = False,
        cache: bool = True,
        stem: bool = False,
    ) -> BM25Backend:
        """Load a named corpus (``drgym.data.load_corpus``) and its cached index, building it on first use.

        Raises:
            ConfigError: Unknown corpus name.
            DataError: The corpus files cannot be fetched or parsed.
        """
        from drgym.data import load_corpus

        passages = load_corpus(name)
        return cls(passages, corpus=name, index_dir=index_dir, rebuild=rebuild, cache=cache, stem=stem)

    def __len__(self) -> int:
        return len(self._passages)

    @property
    def passages(self) -> tuple[Passage, ...]:
        """The corpus, in index order."""
        return self._passages

    def url_for(self, passage_id: str) -> str:
        """The stable URL of a passage of this corpus."""
        return f"https://{HOST}/{quote(self.corpus, safe='')}/{quote(passage_id, safe='')}"

    def get_passage(self, passage_id: str) -> Passage:
        """Return the passage with this id; ``KeyError`` if the corpus has none."""
        index = self._by_id.get(passage_id)
        if index is None:
            raise KeyError(f"no passage with id {passage_id!r} in corpus {self.corpus!r}")
        return self._passages[index]

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Return up to ``k`` passages for ``query``, best first; an empty list if no term matches.

        Raises:
            ToolError: ``query`` is not a string.
        """
        return (await self.search_many([query], k))[0]

    async def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Result]]:
        """Search several queries in one pass (the env sends up to three per tool call).

        Equal to ``[await search(q, k) for q in queries]``, scored together in one worker-thread hop.
        """
        if isinstance(queries, str):
            raise ToolError("search_many takes a list of queries, got a single string")
        queries = list(queries)
        for query in queries:
            if not isinstance(query, str):
                raise ToolError(f"a search query must be a string, got {type(query).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ToolError(f"k must be a non-negative integer, got {k!r}")
        if not queries or k == 0:
            return [[] for _ in queries]
        return await asyncio.to_thread(self._search_sync, queries, k)

    async def open(self, url: str) -> Document:
        """Return the passage behind a ``https://local.drgym/<corpus>/<id>`` URL as a markdown document.

        Raises:
            FetchError: The URL is not a passage URL of this corpus, or names no passage.
        """
        passage = self._passage_for_url(url)
        return Document(
            url=self.url_for(passage.id),
            title=passage.title or passage.id,
            content=f"# {passage.title or passage.id}\n\n{passage.text}",
            content_type="text/markdown",
            source=passage.source,
        )

    async def aclose(self) -> None:
        """Nothing to release: the index lives in memory. Safe to call any number of times."""

    # -- construction ---------------------------------------------------------------------------------

    def _check_passages(self) -> dict[str, int]:
        if not self._passages:
            raise DataError(f"corpus {self.corpus!r} has no passages to index")
        by_id: dict[str, int] = {}
        for i, passage in enumerate(self._passages):
            if not isinstance(passage, Passage):
                raise DataError(
                    f"corpus {self.corpus!r}: item {i} is a {type(passage).__name__}, not a Passage"
                )
            if not all(isinstance(x, str) for x in (passage.id, passage.title, passage.text, passage.source)):
                raise DataError(
                    f"corpus {self.corpus!r}: passage {i} has a non-string id, title, text or source"
                )
            if by_id.setdefault(passage.id, i) != i:
                raise DataError(f"corpus {self.corpus!r} has two passages with id {passage.id!r}")
        return by_id

    def _load_or_build(
        self, root: Path | None, fingerprint: str, params: dict[str, Any], rebuild: bool
    ) -> tuple[bm25s.BM25, IndexInfo]:
        path = None if root is None else root / f"{_dir_name(self.corpus)}-{fingerprint}"
        if path is not None and not rebuild and (path.exists() or path.is_symlink()):
            start = time.perf_counter()
            try:
                retriever = load_index(path, fingerprint=fingerprint, num_docs=len(self._passages))
            except IndexCorruptError as exc:
                logger.warning("%s; rebuilding it now", exc)
            else:
                return retriever, IndexInfo(
                    path, fingerprint, built=False, seconds=time.perf_counter() - start
                )
        start = time.perf_counter()
        retriever = self._build(params)
        seconds = time.perf_counter() - start
        logger.info("indexed %d passages of %r in %.1fs", len(self._passages), self.corpus, seconds)
        if path is not None:
            meta = {
                "format": FORMAT_VERSION,
                "corpus": self.corpus,
                "fingerprint": fingerprint,
                "num_docs": len(self._passages),
                "tokenizer": self._tokenizer.signature,
                "bm25": params,
                "build_seconds": round(seconds, 3),
            }
            try:
                _save_index(retriever, path, meta)
            except OSError as exc:
                logger.warning(
                    "could not write the search index to %s (%s); keeping it in memory only", path, exc
                )
                path = None
        return retriever, IndexInfo(path, fingerprint, built=True, seconds=seconds)

    def _build(self, params: dict[str, Any]) -> bm25s.BM25:
        bm25s = _bm25s()

        vocab: defaultdict[str, int] = defaultdict()
        vocab.default_factory = vocab.__len__  # a new term gets the next id
        corpus_ids = [
            list(map(vocab.__getitem__, self._tokenizer.tokenize(f"{p.title}\n{p.text}")))
            for p in self._passages
        ]
        if not vocab:
            raise DataError(f"corpus {self.corpus!r} has no searchable text (every passage is empty)")
        retriever = bm25s.BM25(k1=params["k1"], b=params["b"], method=params["method"])
        retriever.index((corpus_ids, dict(vocab)), create_empty_token=False, show_progress=False)
        return retriever

    # -- search ---------------------------------------------------------------------------------------

    def _query_ids(self, query: str) -> tuple[list[str], list[int]]:
        terms = self._tokenizer.query_terms(query[:MAX_QUERY_CHARS])[:MAX_QUERY_TERMS]
        return terms, [self._vocab[t] for t in terms if t in self._vocab]

    def _search_sync(self, queries: list[str], k: int) -> list[list[Result]]:
        out: list[list[Result]] = []
        for query in queries:
            terms, ids = self._query_ids(query)
            if not ids:
                out.append([])
                continue
            # bm25s sums each term's precomputed column of the score matrix; the ranking below is ours, since
            # bm25s's top-k (argpartition) does not break ties by passage order.
            scores = self._retriever.get_scores_from_ids(ids)
            top = _top_k(scores, k)
            out.append([self._result(int(d), float(scores[d]), r, terms) for r, d in enumerate(top, start=1)])
        return out

    def _result(self, doc: int, score: float, rank: int, terms: list[str]) -> Result:
        passage = self._passages[doc]
        return Result(
            title=passage.title or passage.id,
            url=self.url_for(passage.id),
            snippet=self._snippet(passage.text, terms),
            extras={"score": score, "rank": rank, "passage_id": passage.id, "source": passage.source},
        )

    def _idf(self, term: str) -> float:
        cached = self._idf_cache.get(term)
        if cached is not None:
            return cached
        t = self._vocab.get(term)
        if t is None:
            return 0.0
        df = int(self._indptr[t + 1] - self._indptr[t])
        value = math.log(1 + (self._num_docs - df + 0.5) / (df + 0.5))
        if len(self._idf_cache) < 100_000:  # bounded: a hostile query stream cannot grow it forever
            self._idf_cache[term] = value
        return value

    def _snippet(self, text: str, terms: list[str]) -> str:
        """The passage from its best-matching sentence on (or its start), about 300 characters."""
        text = " ".join(text.split())
        if len(text) <= SNIPPET_CHARS:
            return text
        weights = {t: self._idf(t) for t in set(terms)}
        starts = [0, *(m.end() for m in _SENTENCE_BREAK.finditer(text))]
        best, best_score = 0, 0.0
        for i, lo in enumerate(starts):
            hi = starts[i + 1] if i + 1 < len(starts) else len(text)
            score = sum(weights.get(t, 0.0) for t in set(self._tokenizer.tokenize(text[lo:hi])))
            if score > best_score:
                best, best_score = i, score
        # Back up over earlier sentences while the whole tail still fits, so a late match fills the snippet.
        while best > 0 and len(text) - starts[best - 1] <= SNIPPET_CHARS:
            best -= 1
        start = starts[best]
        return ("… " if start else "") + _cut(text[start:], SNIPPET_CHARS)

    def _passage_for_url(self, url: str) -> Passage:
        shown = repr(url[:200] + ("…" if len(url) > 200 else "")) if isinstance(url, str) else repr(type(url))
        expected = f"https://{HOST}/{self.corpus}/<passage-id>"
        if not isinstance(url, str):
            raise FetchError(f"a URL must be a string, got {shown}")
        try:
            parts = urlsplit(url.strip())
            host = (parts.hostname or "").lower()
        except ValueError:
            raise FetchError(f"{shown} is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https") or host != HOST:
            raise FetchError(f"{shown} is not a passage of the local corpus; its URLs look like {expected}")
        corpus, _, quoted_id = parts.path.lstrip("/").partition("/")
        if unquote(corpus) != self.corpus:
            raise FetchError(f"{shown} names corpus {unquote(corpus)!r}, but this index serves {expected}")
        passage_id = unquote(quoted_id)
        for candidate in (passage_id, passage_id.rstrip("/")):
            if candidate in self._by_id:
                return self._passages[self._by_id[candidate]]
        raise FetchError(f"{shown}: corpus {self.corpus!r} has no passage with id {passage_id[:200]!r}")
