"""HTML to clean markdown for the browsing agent: main content only, boilerplate dropped.

The browsing agent reads a page viewport by viewport through an LLM, so every menu, share bar, cookie banner
or comment thread left in the text costs tokens and distracts the reader, and every sentence dropped is an
answer the policy can never find. ``extract`` decodes the page, bounds its size and shape before parsing
(:mod:`drgym.web._extract_bounds`), parses it once with lxml, and picks the main content with one of two
extractors:

- ``"trafilatura"`` (the default): trafilatura's main-content selection, rendered to drgym's markdown
  (:mod:`drgym.web._extract_trafilatura`). It is the default because it reads pages it was never tuned on
  better: on the check half of Readability's test pages and on the held-back sets of issue 11 it has the
  higher F1 and recall (figures in ``benchmarks/README.md``).
- ``"fast"``: drgym's own selection, about twice as fast, described below; kept for throughput-bound runs.

The fast path removes what is never content (scripts, styles, forms, navigation, hidden and boilerplate
blocks), then scores paragraph-like blocks by length and commas and credits their ancestors, in the manner of
Arc90/Mozilla Readability, discounts candidates by link density, moves up to a wrapper when the scores say the
article spans several blocks, and merges sibling blocks that score alike. Semantic markup
(``itemprop=articleBody``, a single ``<article>``, ``<main>``) takes over when it holds nearly the same text,
which brings back the title and byline. It renders the chosen subtree with html2text.

Wikipedia (any MediaWiki page, found by its ``#mw-content-text``) takes a dedicated path with either
extractor: the article body only, without edit links, citation markers, hatnotes, navboxes, figures and the
"See also"/"References"/"External links" sections. Infoboxes are *kept*, as ``label: value`` lines, because
their facts (dates, places, numbers) are what factual questions ask about.

The function is pure and CPU-bound, for a worker thread or process. It never raises on a page: empty, binary
or unreadable input gives ``""``; an unknown ``extractor`` name is a :class:`~drgym.errors.ConfigError`.
"""

from __future__ import annotations

import codecs
import difflib
import functools
import html as html_lib
import logging
import re
import threading
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin

import html2text
import lxml.html
from lxml import etree

from drgym.errors import ConfigError
from drgym.web._extract_bounds import PageLimits, bound_page, cut_bytes, plain_paragraphs
from drgym.web.charset import normalize_charset

__all__ = ["DEFAULT_EXTRACTOR", "EXTRACTORS", "PageLimits", "extract"]

EXTRACTORS = ("trafilatura", "fast")
DEFAULT_EXTRACTOR = "trafilatura"

logger = logging.getLogger(__name__)

Element = etree._Element

# fmt: off
_BINARY_MAGIC = (
    b"%PDF", b"\x89PNG", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"BZh",
    b"7z\xbc\xaf", b"RIFF", b"OggS", b"ID3", b"fLaC", b"\x7fELF", b"\x00\x00\x01\x00", b"wOFF", b"wOF2",
    b"\xd0\xcf\x11\xe0",
)
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul",
})
# Never content, whatever the page.
_DROP_TAGS = (
    "script", "style", "noscript", "iframe", "frame", "frameset", "object", "embed", "applet", "template",
    "svg", "canvas", "video", "audio", "source", "track", "map", "button", "input", "select", "textarea",
    "option", "optgroup", "datalist", "link", "meta", "head", "title", "nav", "aside", "dialog", "menu",
    "fieldset", "label", "output", "progress", "meter", "picture",
)
_UNLIKELY_ROLES = frozenset({
    "menu", "menubar", "complementary", "navigation", "alert", "alertdialog", "dialog", "banner",
    "contentinfo", "search", "toolbar",
})
_TAG_BONUS = {
    "div": 5, "article": 5, "pre": 3, "td": 3, "blockquote": 3, "address": -3, "ol": -3, "ul": -3, "dl": -3,
    "dd": -3, "dt": -3, "li": -3, "form": -3, "h1": -5, "h2": -5, "h3": -5, "h4": -5, "h5": -5, "h6": -5,
    "th": -5,
}
# Inline tags html2text renders as their bare text (emphasis is ignored, sup/sub are not marked).
_INLINE_NOOP = (
    "span", "font", "small", "big", "abbr", "acronym", "time", "cite", "u", "ins", "mark", "bdi", "bdo",
    "data", "var", "em", "i", "b", "strong", "sup", "sub", "s", "strike", "del", "q", "dfn", "center", "nobr",
    "wbr",
)
_WIKI_DROP_CLASSES = frozenset({
    "mw-editsection", "reference", "reflist", "references", "mw-references-wrap", "navbox", "navbox-styles",
    "vertical-navbox", "sistersitebox", "metadata", "ambox", "hatnote", "noprint", "mw-empty-elt", "toc",
    "mw-authority-control", "catlinks", "printfooter", "shortdescription", "mw-jump-link", "portalbox",
    "side-box", "sister-bar", "mwe-math-mathml-inline", "mwe-math-mathml-display", "thumb",
    "mw-cite-backlink", "refbegin", "navigation-not-searchable", "mw-kartographer-maplink", "noexcerpt",
    "sidebar",
})
_WIKI_TAIL_SECTIONS = frozenset({
    "references", "see also", "external links", "notes", "further reading", "bibliography", "sources",
    "citations", "footnotes", "notes and references", "references and notes", "works cited",
    "general references", "explanatory notes", "external link", "reference", "note", "literature",
    "notes and citations",
})
# fmt: on

# --- decoding -----------------------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET = re.compile(
    rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([a-zA-Z0-9_:.+-]{1,40})"
    rb"|<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([a-zA-Z0-9_:.+-]{1,40})",
    re.IGNORECASE,
)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _decode(data: bytes) -> str | None:
    """Bytes to text: BOM, then UTF-8 if valid, then the declared charset, then windows-1252; None if binary.

    Valid UTF-8 wins over a declared charset: a mislabelled UTF-8 page is common, while text in another
    encoding that happens to be valid UTF-8 is not.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(enc, "replace")
    head = data[:4096]
    if b"\x00" in head:  # NUL never occurs in HTML text, except as half of a UTF-16 code unit
        utf16 = _utf16_without_bom(head)
        return data.decode(utf16, "replace") if utf16 else None
    if _looks_binary(head):
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # incremental: a body cut off by a size cap may end inside a character
        text = decoder.decode(data, final=False)
        return text + "\ufffd" if decoder.getstate()[0] else text
    except UnicodeDecodeError:
        pass
    m = _META_CHARSET.search(head)
    declared = normalize_charset((m.group(1) or m.group(2)).decode("ascii")) if m else None
    if declared in (None, "utf-8"):
        mixed = _mixed_utf8(data)
        if mixed is not None:
            return mixed
    if declared and not declared.startswith(("utf-16", "utf-32")):  # such a label on ASCII bytes is false
        try:
            return data.decode(declared, "replace")
        except LookupError:  # a codec Python knows but cannot use here (e.g. 'mbcs' off Windows)
            pass
    return data.decode("cp1252", "replace")


_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")
_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\udc80-\udcff]")


def _mixed_utf8(data: bytes) -> str | None:
    """Text of a UTF-8 page with stray legacy bytes (pasted cp1252 text), or None if it is not UTF-8 at all.

    Each invalid byte run is read as windows-1252 and the rest as UTF-8, so neither part turns to mojibake.
    A page is taken as mixed when it holds at least one valid multi-byte UTF-8 character: in legacy-encoded
    text such sequences almost never occur by chance.
    """
    text = data.decode("utf-8", "surrogateescape")
    if not _NON_ASCII_TEXT.search(text):
        return None
    return _ESCAPED_BYTES.sub(
        lambda m: bytes(ord(c) - 0xDC00 for c in m.group()).decode("cp1252", "replace"), text
    )


def _utf16_without_bom(head: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when every other byte is NUL, as in ASCII-range text stored as UTF-16."""
    if len(head) < 8:
        return None
    even, odd = head[0::2], head[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def _looks_binary(sample: bytes | str) -> bool:
    """True for known binary formats and for samples made largely of control characters."""
    if isinstance(sample, bytes):
        if sample.startswith(_BINARY_MAGIC):
            return True
        sample = sample.decode("latin-1")
    return len(_CONTROL.findall(sample)) > max(16, 0.1 * len(sample))


def _xml_safe(text: str) -> str:
    """Text lxml accepts as a node value (it refuses control characters)."""
    return _CONTROL.sub("", text)


# --- parsing ------------------------------------------------------------------------------------------------

_local = threading.local()
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>")
_INLINE_TAG = re.compile(
    r"</?(?:a|abbr|b|big|blink|center|cite|del|em|font|i|ins|mark|nobr|q|s|small|span|strike|strong|sub|sup"
    r"|tt|u)\b[^>]*>",
    re.IGNORECASE,
)
_MAX_DEPTH = 160  # real pages nest a few dozen levels; scoring cost grows with depth times size
# One child step per level: libxml2 visits each node at most once, so this is a linear, C-speed depth test.
_DEEPER_THAN_ANY_PAGE = etree.XPath("boolean(/*" + "/*" * _MAX_DEPTH + ")")


def _parser() -> lxml.html.HTMLParser:
    # lxml parsers keep per-parse state; one per thread keeps concurrent extract() calls independent.
    p = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = lxml.html.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True, huge_tree=True
        )
    return p


def _parse(text: str) -> lxml.html.HtmlElement | None:
    """Parse a page, surviving absurd nesting (thousands of unclosed tags) at the cost of its markup."""
    text = _XML_DECL.sub("", text, count=1)  # lxml refuses a str that declares an encoding
    if "\x00" in text:  # libxml2 would turn it into U+FFFD; other control characters go at the end
        text = text.replace("\x00", "")
    if not text.strip():
        return None
    root, too_deep = _parse_once(text)
    if too_deep:  # usually unclosed inline tags (<font>, <b>) by the thousand: drop them and try again
        root, too_deep = _parse_once(_INLINE_TAG.sub("", text))
    if too_deep:  # nested blocks: keep the words, one paragraph per block
        root, _ = _parse_once(_PlainText.html(text))
    return root


def _parse_once(text: str) -> tuple[lxml.html.HtmlElement | None, bool]:
    """Parse; also say whether the tree is too deep (libxml2 may even have stopped at its nesting limit)."""
    parser = _parser()
    try:
        root = lxml.html.document_fromstring(text.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None, False
    err = parser.error_log.last_error
    gave_up = err is not None and err.level_name == "FATAL" and "depth" in err.message.lower()
    return root, gave_up or bool(_DEEPER_THAN_ANY_PAGE(root))


class _PlainText(HTMLParser):
    """Text of a page with a paragraph per block, by a parser with no nesting limit (the last resort)."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)

    @classmethod
    def html(cls, text: str) -> str:
        """The page's text re-marked as flat ``<p>`` paragraphs."""
        parser = cls()
        parser.feed(text)
        parser.close()
        paras = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
        return "<html><body>" + "".join(f"<p>{html_lib.escape(p)}</p>" for p in paras if p) + "</body></html>"


# --- boilerplate removal ------------------------------------------------------------------------------------

# Class/id words of blocks that are never article text: Readability's "unlikely candidates" and more.
_UNLIKELY = re.compile(
    r"-ad-|(?:^|[\s_-])ads?(?:$|[\s_])|ad-?slot|advert|agegate|ai2html|banner|breadcrumb|combx|comment|"
    r"community|consent|cookie|cover-wrap|disqus|extra|footer|gdpr|header|legends|masthead|menu|modal|"
    r"newsletter|outbrain|pager|pagination|popup|promo|related|remark|replies|rss|share|sharing|shoutbox|"
    r"sidebar|skip-?link|skyscraper|social|sponsor|subscri|supplemental|taboola|toolbar|tweet|yom-remote|"
    r"widget",
    re.IGNORECASE,
)
_MAYBE = re.compile(r"and|article|body|column|content|main|shadow", re.IGNORECASE)
# Banners that are boilerplate whatever other words their class holds.
_ALWAYS = re.compile(
    r"cookie|consent|gdpr|onetrust|didomi|newsletter|share-?bar|social-?share|skip-?link", re.IGNORECASE
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_PROTECTED_TAGS = frozenset(
    {"html", "body", "article", "main", "table", "tbody", "thead", "tr", "td", "th", "a"}
)
_HINT_XPATH = "//*[self::article or self::main or @itemprop='articleBody' or @role='main']"


@functools.lru_cache(maxsize=65536)
def _is_boilerplate_name(name: str) -> bool:
    """Whether a "class id" string marks a boilerplate block; class names repeat, so decisions are cached."""
    return bool(_ALWAYS.search(name) or (_UNLIKELY.search(name) and not _MAYBE.search(name)))


def _remove_boilerplate(root: lxml.html.HtmlElement) -> None:
    """Drop never-content tags, hidden elements and blocks whose class/id/role marks them as boilerplate."""
    etree.strip_elements(root, *_DROP_TAGS, with_tail=False)
    for form in reversed(root.xpath("//form")):
        # Some sites wrap the whole page in a <form>: keep a large form's contents, drop small ones (search,
        # login, sign-up).
        if len(form.text_content()) > 1000:
            form.drop_tag()
        else:
            form.drop_tree()
    for el in root.xpath("//*[self::footer or (self::header and not(.//h1))]"):
        el.drop_tree()
    # The wrappers of what semantic markup calls the article are never boilerplate, whatever their class.
    hint = _semantic_hint(root)
    protected = set(hint.iterancestors()) if hint is not None else set()
    for el in root.xpath("//*[@class or @id or @style or @role or @hidden or @aria-hidden or @aria-modal]"):
        if el in protected:
            continue
        get, tag = el.get, el.tag
        style, role = get("style"), get("role")
        if (
            get("hidden") is not None
            or get("aria-hidden") == "true"
            or get("aria-modal") == "true"
            or (style and _HIDDEN_STYLE.search(style))
            or (role and role.lower() in _UNLIKELY_ROLES)
        ):
            if tag not in ("html", "body"):
                el.drop_tree()
            continue
        cls, ident = get("class"), get("id")
        if tag in _PROTECTED_TAGS or not (cls or ident):
            continue
        name = f"{cls or ''} {ident or ''}"
        # An "entry-header" holding the title and byline stays.
        if _is_boilerplate_name(name) and not (
            "header" in name.lower() and not _ALWAYS.search(name) and el.find(".//h1") is not None
        ):
            el.drop_tree()


def _semantic_hint(root: lxml.html.HtmlElement) -> Element | None:
    """The element semantic markup names as the article body, if the page names exactly one."""
    found = root.xpath(_HINT_XPATH)
    kinds: tuple[Callable[[Element], bool], ...] = (
        lambda el: el.get("itemprop") == "articleBody",
        lambda el: el.tag == "article",
        lambda el: el.tag == "main" or el.get("role") == "main",
    )
    for kind in kinds:
        of_kind = [el for el in found if kind(el)]
        if of_kind:
            return of_kind[0] if len(of_kind) == 1 else None
    return None


# --- main-content selection ---------------------------------------------------------------------------------

_POSITIVE = re.compile(
    r"article|body|content|entry|hentry|h-entry|main|page|pagination|post|text|blog|story", re.IGNORECASE
)
_NEGATIVE = re.compile(
    r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|foot|footer|footnote|gdpr|"
    r"masthead|media|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|shopping|"
    r"tags|tool|widget",
    re.IGNORECASE,
)
# Paragraph-like blocks: p, pre, td, blockquote, and divs holding no block (text and inline markup only).
_PARAGRAPHS = (
    "//p | //pre | //td | //blockquote | //div[not(p or div or table or ul or ol or dl or pre or blockquote"
    " or section or article or h1 or h2 or h3 or h4 or h5 or h6 or form or figure)]"
)
_SENTENCE_END = re.compile(r"\.( |$)")


def _class_weight(el: Element) -> int:
    weight = 0
    for attr in (el.get("class"), el.get("id")):
        if attr:
            weight += 25 * (bool(_POSITIVE.search(attr)) - bool(_NEGATIVE.search(attr)))
    return weight


def _link_density(el: Element, text_len: int | None = None) -> float:
    total = len(el.text_content()) if text_len is None else text_len
    if not total:
        return 0.0
    return min(1.0, sum(len(a.text_content()) for a in el.iter("a")) / total)


class _Scores:
    """Readability's candidate scores: raw from the paragraphs, final (times 1 - link density) on demand."""

    def __init__(self, root: lxml.html.HtmlElement) -> None:
        # Each paragraph credits its five nearest ancestors, less with distance.
        self.raw: dict[Element, float] = {}
        self._final: dict[Element, float] = {}
        for para in root.xpath(_PARAGRAPHS):
            text = para.text_content()
            if len(text) < 25:
                continue
            score = 1.0 + text.count(",") + min(len(text) // 100, 3)
            for level, anc in enumerate(para.iterancestors()):
                if level >= 5 or anc.tag == "html":
                    break
                if anc not in self.raw:
                    self.raw[anc] = _TAG_BONUS.get(anc.tag, 0) + _class_weight(anc)
                self.raw[anc] += score if level == 0 else score / (2 if level == 1 else level * 3)

    def final(self, el: Element) -> float | None:
        """The final score of a candidate, None for an element that is not one."""
        if el not in self.raw:
            return None
        if el not in self._final:
            self._final[el] = self.raw[el] * (1.0 - _link_density(el))
        return self._final[el]

    def top(self, n: int = 5) -> list[tuple[float, Element]]:
        """The ``n`` best candidates by final score, best first."""
        best: list[tuple[float, Element]] = []
        # final <= raw: visit by raw score and stop once a raw score cannot enter the top n.
        for el, raw in sorted(self.raw.items(), key=lambda kv: kv[1], reverse=True):
            if len(best) == n and raw <= best[-1][0]:
                break
            best.append((self.final(el), el))  # type: ignore[arg-type]
            best.sort(key=lambda fe: fe[0], reverse=True)
            del best[n:]
        return best


def _pick_main(root: lxml.html.HtmlElement, body: Element) -> Element | None:
    """The main-content subtree, or None when no block scores (a page of lists and links)."""
    scores = _Scores(root)
    if not scores.raw:
        return None
    best = scores.top()
    top = _climb(_common_wrapper(best, body), scores, body)
    hint = _semantic_hint(root)
    if hint is not None and hint is not top:
        hint_len, top_len = len(hint.text_content()), len(top.text_content())
        # The hint wins when it holds nearly the same text: it then also holds title and byline.
        if _is_ancestor(hint, top) and top_len >= 0.6 * hint_len:
            return hint
        if _is_ancestor(top, hint) and hint_len >= 0.8 * top_len:
            return hint
    return _merge_siblings(top, scores)


def _is_ancestor(anc: Element, el: Element) -> bool:
    return any(a is anc for a in el.iterancestors())


def _below_body(el: Element | None, body: Element) -> bool:
    return el is not None and el is not body and el.tag != "html"


def _common_wrapper(best: list[tuple[float, Element]], body: Element) -> Element:
    """When three near-best candidates share an ancestor with the best, the article is that ancestor."""
    top_score, top = best[0]
    others = [el for score, el in best[1:] if score >= 0.75 * top_score]
    if len(others) < 3:
        return top
    ancestor_sets = [set(el.iterancestors()) for el in others]
    parent = top.getparent()
    while _below_body(parent, body):
        if sum(parent in anc for anc in ancestor_sets) >= 3:
            return parent
        parent = parent.getparent()
    return top


def _climb(top: Element, scores: _Scores, body: Element) -> Element:
    """Move up to an ancestor that scores higher (the article's wrapper), and past single-child wrappers."""
    last = scores.final(top) or 0.0
    threshold = last / 3
    parent = top.getparent()
    while _below_body(parent, body):
        score = scores.final(parent)
        if score is not None:
            if score < threshold:
                break
            if score > last:
                top = parent
                break
            last = score
        parent = parent.getparent()
    parent = top.getparent()
    while _below_body(parent, body) and len(parent) == 1:
        top, parent = parent, parent.getparent()
    return top


def _merge_siblings(top: Element, scores: _Scores) -> Element:
    """Collect ``top`` and the siblings that score alike (split article bodies, lead paragraphs) in a div."""
    parent = top.getparent()
    if parent is None:
        return top
    top_score = scores.final(top) or 0.0
    threshold = max(10.0, top_score * 0.2)
    top_class = top.get("class", "")
    keep = []
    for sib in parent:
        if sib is top:
            keep.append(sib)
            continue
        score = scores.final(sib)
        bonus = top_score * 0.2 if top_class and sib.get("class", "") == top_class else 0.0
        if score is not None and score + bonus >= threshold:
            keep.append(sib)
        elif sib.tag == "p":
            text = sib.text_content()
            density = _link_density(sib, len(text))
            if (len(text) > 80 and density < 0.25) or (
                0 < len(text) <= 80 and density == 0 and _SENTENCE_END.search(text)
            ):
                keep.append(sib)
    if len(keep) == 1:
        return top
    box = lxml.html.Element("div")
    for el in keep:
        el.tail = None
        box.append(el)
    return box


# --- cleaning inside the main content -----------------------------------------------------------------------


def _clean_content(content: Element) -> None:
    for h in content.xpath(".//h1 | .//h2"):
        if _class_weight(h) < 0:
            h.drop_tree()
    _clean_conditionally(content)
    for p in content.xpath(".//p[not(.//img)]"):
        if not p.text_content().strip():
            p.drop_tree()


def _clean_conditionally(content: Element) -> None:
    """Drop link-dense or content-poor blocks (menus, related-links lists, share bars) inside the content."""
    for el in reversed(list(content.iter("div", "section", "ul", "ol", "table", "dl"))):
        if el is content or el.getparent() is None or (el.tag == "table" and _is_data_table(el)):
            continue
        weight = _class_weight(el)
        if weight < 0:
            el.drop_tree()
            continue
        text = el.text_content()
        if text.count(",") >= 10:
            continue
        n = len(text)
        density = _link_density(el, n)
        if el.tag in ("ul", "ol", "dl"):
            if density > 0.5:
                el.drop_tree()
            continue
        paras, imgs = len(el.xpath(".//p")), len(el.xpath(".//img"))
        if (
            (imgs > 1 and paras / imgs < 0.5)
            or len(el.xpath(".//li")) - 100 > paras
            or (
                n < 25
                and (imgs == 0 or imgs > 2)
                and not el.xpath(".//pre | .//table | .//h1 | .//h2 | .//h3")
            )
            or (weight < 25 and density > (0.2 if n < 200 else 0.33))
            or density > 0.5
        ):
            el.drop_tree()


def _is_data_table(table: Element) -> bool:
    """Readability's test: a table of facts (rendered as a markdown table) rather than a layout grid."""
    if table.get("role") == "presentation" or table.get("datatable") == "0":
        return False
    if table.get("summary") or table.xpath("./caption or ./thead or ./tfoot or ./colgroup or ./col or .//th"):
        return True
    if table.xpath(".//table"):
        return False
    rows = table.xpath("./tr | ./*/tr")
    cols = max((len(r) for r in rows), default=0)
    if len(rows) <= 1 or cols <= 1:
        return False
    if table.xpath(".//td//p | .//td//div | .//td//ul | .//td//h1 | .//td//h2 | .//td//h3"):
        return False
    return len(rows) >= 10 or cols > 4 or len(rows) * cols > 10


# --- Wikipedia ----------------------------------------------------------------------------------------------

_HEADING_LEVEL = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _wikipedia_content(root: lxml.html.HtmlElement) -> Element | None:
    """The article body of a MediaWiki page (Wikipedia and its mirrors), found by its structure."""
    found = root.xpath("//*[@id='mw-content-text']")
    if not found:
        return None
    inner = found[0].xpath("./div[contains(concat(' ', @class, ' '), ' mw-parser-output ')]")
    return inner[0] if inner else found[0]


def _clean_wikipedia(content: Element) -> None:
    for el in content.xpath(".//*[@class or @style or @id='toc' or self::figure]"):
        style = el.get("style")
        if (
            el.tag == "figure"
            or el.get("id") == "toc"
            or (style and _HIDDEN_STYLE.search(style))
            or not _WIKI_DROP_CLASSES.isdisjoint((el.get("class") or "").split())
        ):
            el.drop_tree()
    for img in content.xpath(".//img[contains(@class, 'mwe-math-fallback-image')]"):
        img.tag, img.text = "span", _xml_safe(img.get("alt", ""))  # the formula's TeX
    for table in content.xpath(".//table[contains(concat(' ', @class, ' '), ' infobox ')]"):
        _infobox_to_lines(table)
    dropping: int | None = None  # level of the tail section being dropped
    for child in list(content):
        head = _heading(child)
        if head is not None:
            level, title = head
            if dropping is not None and level <= dropping:
                dropping = None
            if dropping is None and " ".join(title.lower().split()) in _WIKI_TAIL_SECTIONS:
                dropping = level
        if dropping is not None:
            child.drop_tree()


def _heading(el: Element) -> tuple[int, str] | None:
    """Level and title of a section heading, bare (``<h2>``) or wrapped (``<div class="mw-heading">``)."""
    if el.tag in _HEADING_LEVEL:
        return _HEADING_LEVEL[el.tag], el.text_content()
    if el.tag == "div" and "mw-heading" in (el.get("class") or ""):
        for h in el:
            if h.tag in _HEADING_LEVEL:
                return _HEADING_LEVEL[h.tag], h.text_content()
    return None


def _infobox_to_lines(table: Element) -> None:
    """Rewrite an infobox as a list of ``label: value`` items, which reads better than a wide grid."""
    for br in table.iter("br"):
        br.tail = " " + (br.tail or "")
    box = lxml.html.Element("ul")
    caption = table.find("caption")
    rows = [[caption]] if caption is not None else []
    rows += [[c for c in row if c.tag in ("th", "td")] for row in table.iter("tr")]
    for cells in rows:
        texts = [t for t in (" ".join(c.text_content().split()) for c in cells) if t]
        if texts:
            etree.SubElement(box, "li").text = _xml_safe(
                ": ".join(texts) if len(texts) <= 2 else " | ".join(texts)
            )
    box.tail = table.tail
    table.getparent().replace(table, box)


def _wiki_title(root: lxml.html.HtmlElement) -> str:
    found = root.xpath("//*[@id='firstHeading']")
    return " ".join(found[0].text_content().split()) if found else ""


# --- rendering ----------------------------------------------------------------------------------------------

_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_LIST_INDENT = re.compile(r"^  (?=[ ]*(?:[*+-]|\d+\.) )", re.MULTILINE)  # html2text indents top-level items
_MAX_LIST_DEPTH = 6


def _render(content: Element, url: str | None, links: bool) -> str:
    # html2text is pure Python and pays per tag: first strip, in C, every tag it would render as nothing.
    etree.strip_elements(content, "img", "hr", with_tail=False)
    etree.strip_tags(content, *_INLINE_NOOP)
    _cap_nesting(content)
    for table in reversed(list(content.iter("table"))):
        if not _is_data_table(table):  # a layout grid as a markdown table would cut prose into cells
            for el in table.iter("table", "tbody", "thead", "tfoot", "tr", "td", "th", "caption"):
                el.tag = "div"
    for caption in list(content.iter("caption")):  # html2text would run a caption into the header row
        table = caption.getparent()
        if table.getparent() is not None:
            caption.tag = "p"
            table.addprevious(caption)
    if links:
        _absolute_links(content, url)
    else:
        etree.strip_tags(content, "a")
    _strip_attributes(content)
    conv = html2text.HTML2Text(bodywidth=0)
    conv.ignore_images = True
    conv.ignore_links = not links
    conv.ignore_emphasis = True
    conv.unicode_snob = True
    conv.skip_internal_links = True
    conv.mark_code = False
    text = conv.handle(lxml.html.tostring(content, encoding="unicode", with_tail=False))
    text = _CONTROL.sub("", text.replace("\xa0", " "))
    text = _TRAILING_SPACE.sub("\n", text)
    text = _LIST_INDENT.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _cap_nesting(content: Element) -> None:
    """Flatten quotes and lists nested past a few levels: html2text prefixes every line with one marker per
    level, so thousands of nested quotes would come out quadratic in size."""
    deep, depth = [], 0
    for event, el in etree.iterwalk(content, events=("start", "end"), tag=("blockquote", "ul", "ol", "dl")):
        depth += 1 if event == "start" else -1
        if event == "start" and depth > _MAX_LIST_DEPTH:
            deep.append(el)
    for el in deep:
        el.tag = "div"


def _absolute_links(content: Element, url: str | None) -> None:
    for a in content.iter("a"):
        href = (a.get("href") or "").strip()
        if not href or href.startswith(("javascript:", "#", "data:", "mailto:")):
            a.attrib.pop("href", None)
        elif url:
            try:
                a.set("href", urljoin(url, href))
            except ValueError:  # an unparsable URL, or one lxml will not store
                a.attrib.pop("href", None)


def _strip_attributes(content: Element) -> None:
    """Drop every attribute but ``href`` (html2text reads no other), so that it parses less."""
    for el in content.iter():
        attrib = el.attrib
        if attrib:
            href = attrib.get("href")
            attrib.clear()
            if href:
                try:
                    attrib["href"] = href
                except ValueError:  # a value lxml will not store back (control characters)
                    pass


# --- entry point --------------------------------------------------------------------------------------------

_MIN_MAIN_CHARS = 500  # shorter pages are kept whole; shorter main texts of long pages are suspect


def extract(
    html: bytes | str,
    url: str | None = None,
    *,
    links: bool = False,
    extractor: str = DEFAULT_EXTRACTOR,
    limits: PageLimits | None = None,
) -> str:
    """Convert an HTML page to clean markdown holding its main content.

    Args:
        html: The page, as raw bytes (charset from a BOM, UTF-8 validity or ``<meta charset>``) or as text.
        url: The page's address, to resolve relative links.
        links: Keep hyperlinks as markdown ``[text](url)``; by default only the anchor text is kept.
        extractor: ``"trafilatura"`` (the default: the most accurate on unseen pages) or ``"fast"`` (drgym's
            own selection, about twice as fast).
        limits: How much of the page is read (:class:`PageLimits`); a page past them is cut before parsing.

    Returns:
        Markdown with the headings, paragraphs, lists and tables of the main content, or ``""`` when the input
        holds nothing readable (empty, binary, unparsable). Never raises on bad input.

    Raises:
        ConfigError: ``extractor`` is not one of :data:`EXTRACTORS`.
    """
    if extractor not in EXTRACTORS:
        close = difflib.get_close_matches(str(extractor), EXTRACTORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown extractor {extractor!r}: expected one of {', '.join(EXTRACTORS)}{hint}")
    try:
        return _extract(html, url, links, extractor, limits or _DEFAULT_LIMITS)
    except Exception:  # a hostile page must never take the caller down
        logger.warning("extraction failed for %s", url or "a page", exc_info=True)
        return ""


_DEFAULT_LIMITS = PageLimits()
_REST_PARAGRAPHS = 1000


def _extract(
    html: bytes | str,
    url: str | None,
    links: bool,
    extractor: str = DEFAULT_EXTRACTOR,
    limits: PageLimits = _DEFAULT_LIMITS,
) -> str:
    if isinstance(html, (bytes, bytearray, memoryview)):
        text = _decode(cut_bytes(bytes(html), limits))
    elif isinstance(html, str):
        text = None if _looks_binary(html[:4096]) else html
    else:
        return ""
    if not text:
        return ""
    text, tags, rest = bound_page(text, limits)
    if rest:  # past the tag cap the words are kept, as a bounded number of plain paragraphs
        text += plain_paragraphs(rest, _REST_PARAGRAPHS)
    root = _parse(text)
    if root is None:
        return ""
    wiki = _wikipedia_content(root)
    if wiki is not None:
        etree.strip_elements(root, *_DROP_TAGS, with_tail=False)
        _clean_wikipedia(wiki)
        title, body = _wiki_title(root), _render(wiki, url, links)
        return f"# {title}\n\n{body}" if title and body else body
    # A short page has nothing to choose between: the fast path keeps all of it that is not boilerplate.
    # A very large page takes the fast path too: trafilatura pays about twice as much per element.
    if (
        extractor == "trafilatura"
        and tags <= limits.max_tags_trafilatura
        and len(_body(root).text_content()) > _MIN_MAIN_CHARS
    ):
        from drgym.web._extract_trafilatura import trafilatura_markdown

        try:
            md = trafilatura_markdown(root, url, links)  # works on a copy: root stays whole for the fast path
        except Exception:  # a library failure on an odd tree costs the page nothing: the fast path reads it
            logger.info("trafilatura failed on %s; using the fast extractor", url or "a page", exc_info=True)
            md = None
        if md:
            return _tidy(md)
    return _fast(root, text, url, links)


def _fast(root: lxml.html.HtmlElement, text: str, url: str | None, links: bool) -> str:
    """drgym's own main-content selection (the ``"fast"`` extractor)."""
    _remove_boilerplate(root)
    body = _body(root)
    body_chars = len(body.text_content())
    # On a short page there is nothing to choose between: keep all that survived boilerplate removal.
    content = _pick_main(root, body) if body_chars > _MIN_MAIN_CHARS else None
    if content is None:
        return _render(body, url, links)
    _clean_content(content)
    main = _render(content, url, links)
    if len(main) >= _MIN_MAIN_CHARS or body_chars < 2 * len(main) + _MIN_MAIN_CHARS:
        return main
    # The selection kept a fragment of a page with much more text: the whole boilerplate-free body is better
    # than a caption or a byline. The selection rearranged the tree, so parse again.
    root = _parse(text)
    if root is None:
        return main
    _remove_boilerplate(root)
    return _render(_body(root), url, links)


def _tidy(text: str) -> str:
    text = _CONTROL.sub("", text.replace("\xa0", " "))
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _body(root: lxml.html.HtmlElement) -> Element:
    body = root.find("body")
    return root if body is None else body
