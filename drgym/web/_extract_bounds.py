"""Bound a page's size and shape before it is parsed, so that no page costs more than a few seconds.

libxml2's cost is quadratic in the attributes of one element (40,000 attributes: 3 s; 80,000: 17 s) and
extraction pays per element (about 50-100 µs each here, so a 2 MB page of 240,000 tiny ``<p>`` costs 10 s or
more). A page is therefore cut *before* parsing, by a scan that is linear and runs at regex speed: at
``max_chars`` characters, after ``max_tags`` start tags (the words past that are kept as at most a thousand
plain paragraphs), and with any start tag of more than
``max_attributes`` attributes shortened to its first ones; pages of more than ``max_tags_trafilatura`` tags
take the fast extractor. Real pages stay inside the defaults (the 130 pages of Readability's test suite: at
most 9,900 tags, on a Wikipedia page, and 210 ``=`` signs in one tag; 1.6 MB). Nesting depth is bounded by the
tag count here and handled by the parser's depth fallback.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass

from drgym.errors import ConfigError

__all__ = ["PageLimits", "bound_page", "cut_bytes", "plain_paragraphs"]

logger = logging.getLogger(__name__)

# A start tag up to the next "<" or ">": each character belongs to at most one match, so the scan is linear
# even on "<a<a<a..." without any ">".
_START_TAG = re.compile(r"<[a-zA-Z][^<>]*")
_ATTRIBUTE = re.compile(r"""[^\s"'>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]*))?""")
_LONG_TAG = 2048  # a start tag shorter than this cannot hold many attributes; only longer ones are counted


@dataclass(frozen=True)
class PageLimits:
    """How much of a page extraction reads; the rest is cut before parsing.

    Attributes:
        max_chars: Characters of the page read (bytes, for undecoded input); the fetcher's body cap is 4 MiB.
        max_tags: Start tags read; the page is cut before the first tag past this.
        max_attributes: Attributes kept on one start tag (the first ones).
        max_tags_trafilatura: Pages with more start tags than this take the fast extractor even when
            trafilatura is asked for: trafilatura pays about twice as much per element.
    """

    max_chars: int = 4 * 1024 * 1024
    max_tags: int = 25_000
    max_attributes: int = 256
    max_tags_trafilatura: int = 12_000

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_tags", "max_attributes", "max_tags_trafilatura"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PageLimits.{name} must be a positive integer, got {value!r}")


def cut_bytes(data: bytes, limits: PageLimits) -> bytes:
    """The first ``max_chars`` bytes, cut before a tag where one starts near the end."""
    if len(data) <= limits.max_chars:
        return data
    end = data.rfind(b"<", max(0, limits.max_chars - 65536), limits.max_chars)
    end = end if end > 0 else limits.max_chars  # decoding copes with a character cut in two
    logger.info("page cut at %d of %d bytes before parsing", end, len(data))
    return data[:end]


def bound_page(text: str, limits: PageLimits) -> tuple[str, int, str]:
    """``text`` cut to the limits, the number of start tags it keeps, and the rest past the tag cap.

    The cut text has at most ``max_chars`` characters and ``max_tags`` start tags, and no start tag with more
    than ``max_attributes`` attributes. The rest (``""`` when the page has fewer tags) is for the caller to read
    as plain text, so that words past the cap (after 50,000 nested ``<div>``, say) are not lost.
    """
    if len(text) > limits.max_chars:
        # Cut before the last tag that starts in the final 64 KiB, so that no half tag is left at the end.
        end = text.rfind("<", max(0, limits.max_chars - 65536), limits.max_chars)
        logger.info("page cut at %d of %d characters before parsing", end, len(text))
        text = text[: end if end > 0 else limits.max_chars]
    pieces: list[str] = []
    count = 0
    done = 0  # text[:done] is in pieces
    for count, m in enumerate(_START_TAG.finditer(text), 1):
        if count > limits.max_tags:
            logger.info(
                "page cut after %d start tags, at character %d, before parsing", limits.max_tags, m.start()
            )
            pieces.append(text[done : m.start()])
            return "".join(pieces), limits.max_tags, text[m.start() :]
        tag = m.group()
        if len(tag) > _LONG_TAG:
            attrs = _ATTRIBUTE.findall(tag, 1)
            if len(attrs) > limits.max_attributes + 1:  # the first match is the tag name
                logger.info("start tag with %d attributes cut to %d", len(attrs) - 1, limits.max_attributes)
                pieces.append(text[done : m.start()])
                pieces.append("<" + " ".join(attrs[: limits.max_attributes + 1]))
                done = m.end()
    if not pieces:
        return text, count, ""
    pieces.append(text[done:])
    return "".join(pieces), count, ""


_SKIPPED_OPEN = re.compile(r"<(script|style|noscript|template|svg|head)\b", re.IGNORECASE)
_BLOCK_TAG = re.compile(
    r"</?(?:address|article|aside|blockquote|br|dd|div|dl|dt|figcaption|figure|footer|h[1-6]|header|hr|li|main"
    r"|nav|ol|p|pre|section|table|td|th|tr|ul)\b[^<>]*>?",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[^<>]*>?")


def plain_paragraphs(fragment: str, max_paragraphs: int) -> str:
    """The words of an HTML fragment as at most ``max_paragraphs`` ``<p>`` paragraphs, in linear time.

    For the part of a page past the tag cap: regex passes at C speed, no parser, script and style text left out.
    """
    lower = fragment.lower()
    kept: list[str] = []
    pos = 0
    while (m := _SKIPPED_OPEN.search(fragment, pos)) is not None:
        kept.append(fragment[pos : m.start()])
        close = lower.find("</" + m.group(1).lower(), m.end())
        if close < 0:
            pos = len(fragment)
            break
        pos = close + 2
    kept.append(fragment[pos:])
    text = _ANY_TAG.sub("", _BLOCK_TAG.sub("\n\n", "".join(kept)))
    paras = [q for q in (" ".join(p.split()) for p in html.unescape(text).split("\n\n")) if q]
    if len(paras) > max_paragraphs:
        size = -(-len(paras) // max_paragraphs)
        paras = [" ".join(paras[i : i + size]) for i in range(0, len(paras), size)]
    return "".join(f"<p>{html.escape(q, quote=False)}</p>" for q in paras)
