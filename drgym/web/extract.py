"""HTML to clean markdown for the browsing agent: main content only, boilerplate dropped.

The browsing agent reads a page viewport by viewport through an LLM, so every menu, share bar, cookie banner
or comment thread left in the text costs tokens and distracts the reader. ``extract`` parses with lxml,
removes what is never content (scripts, styles, forms, navigation, hidden and boilerplate blocks), picks the
main-content subtree and renders it with html2text, keeping headings, lists and tables.

Main-content selection scores paragraph-like blocks by text length and commas and credits their ancestors, in
the manner of Arc90/Mozilla Readability, then discounts candidates by link density, climbs to a wrapper when the
score supports it and merges sibling blocks that score alike. Semantic markup (``itemprop=articleBody``, a
single ``<article>``, ``<main>``) takes over when it contains most of the scored text. Wikipedia pages take a
dedicated path: the article body only, with edit links, citation markers, references, navboxes and the
"See also"/"References"/"External links" sections removed. Infoboxes are *kept*, rendered as ``label: value``
lines, because their facts (dates, places, numbers) are what factual questions ask about.

Every step is linear in the page size (lxml does the heavy work in C), so a multi-megabyte page costs
milliseconds per megabyte, not seconds. The function is pure and CPU-bound: async callers run it through
``asyncio.to_thread``. It never raises on bad input: empty, binary or unreadable input gives ``""``.
"""

from __future__ import annotations

import codecs
import functools
import html as html_lib
import logging
import re
import threading
from html.parser import HTMLParser
from urllib.parse import urljoin

import html2text
import lxml.html
from lxml import etree

__all__ = ["extract"]

logger = logging.getLogger(__name__)

# --- decoding -------------------------------------------------------------------------------------------------

_BINARY_MAGIC = (
    b"%PDF", b"\x89PNG", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"7z\xbc\xaf",
    b"RIFF", b"OggS", b"ID3", b"fLaC", b"\x7fELF", b"\x00\x00\x01\x00", b"wOFF", b"wOF2", b"\xd0\xcf\x11\xe0",
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)|<\?xml[^>]*?encoding\s*=\s*["']([a-zA-Z0-9_:.\-]+)""",
    re.IGNORECASE,
)
# WHATWG: these labels mean windows-1252 in HTML; a byte stream declaring UTF-16 without a BOM is ASCII-based.
_CHARSET_ALIASES = {"iso8859-1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252", "utf-16": "utf-8",
                    "utf-16-le": "utf-8", "utf-16-be": "utf-8", "utf-32": "utf-8"}
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>")
_BLOCK_TAGS_LIST = (
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "td", "th", "tr", "ul",
)


def _declared_charset(head: bytes) -> str | None:
    m = _META_CHARSET.search(head)
    if not m:
        return None
    label = (m.group(1) or m.group(2)).decode("ascii", "ignore")
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return _CHARSET_ALIASES.get(name, name)


def _xml_safe(text: str) -> str:
    """Text lxml accepts as a node value (it refuses control characters)."""
    return _CONTROL.sub("", text)


def _looks_binary(sample: bytes | str) -> bool:
    """True for known binary formats and for samples that are mostly control characters."""
    if isinstance(sample, bytes) and sample.startswith(_BINARY_MAGIC):
        return True
    if not sample:
        return False
    controls = len(_CONTROL.findall(sample if isinstance(sample, str) else sample.decode("latin-1")))
    return controls > 0.1 * len(sample)


def _decode(data: bytes) -> str | None:
    """Bytes to text: BOM, then strict UTF-8, then the declared charset, then windows-1252."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(enc, "replace")
    head = data[:4096]
    if _looks_binary(head):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = _declared_charset(head)
    if declared and declared != "utf-8":
        try:
            return data.decode(declared, "replace")
        except LookupError:  # a codec name Python knows but cannot decode with (e.g. 'mbcs' off Windows)
            pass
    return data.decode("utf-8" if declared == "utf-8" else "cp1252", "replace")


# --- parsing --------------------------------------------------------------------------------------------------

_local = threading.local()


def _parser() -> lxml.html.HTMLParser:
    # lxml parsers keep per-parse state; one per thread keeps concurrent extract() calls independent.
    p = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = lxml.html.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True, huge_tree=True,
        )
    return p


def _parse_once(text: str) -> tuple[lxml.html.HtmlElement | None, bool]:
    """Parse; also say whether libxml2 gave up at its nesting limit (the rest of the page is then missing)."""
    parser = _parser()
    try:
        root = lxml.html.document_fromstring(text.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None, False
    err = parser.error_log.last_error
    too_deep = err is not None and err.level_name == "FATAL" and "depth" in err.message.lower()
    return root, too_deep


def _parse(text: str) -> lxml.html.HtmlElement | None:
    """Parse a page, surviving nesting deeper than libxml2 allows (thousands of unclosed tags)."""
    # libxml2 turns NUL into U+FFFD and keeps other control characters; those are removed from the output.
    text = _XML_DECL.sub("", text, count=1)
    if not text.strip():
        return None
    root, too_deep = _parse_once(text)
    if too_deep:  # usually unclosed inline tags (<font>, <b>) by the thousand: drop them and try again
        root, too_deep = _parse_once(_INLINE_TAG.sub("", text))
    if too_deep:  # nested blocks: keep the words, one paragraph per block
        root, _ = _parse_once(_PlainText.html(text))
    return root


_INLINE_TAG = re.compile(
    r"</?(?:a|abbr|b|big|blink|center|cite|del|em|font|i|ins|mark|nobr|q|s|small|span|strike|strong|sub|sup|tt|u)"
    r"\b[^>]*>",
    re.IGNORECASE,
)


class _PlainText(HTMLParser):
    """Text of a page with a paragraph per block, by a parser with no nesting limit (the last resort)."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
    _BLOCK = frozenset(_BLOCK_TAGS_LIST)

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK:
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


# --- boilerplate removal --------------------------------------------------------------------------------------

_DROP_TAGS = (
    "script", "style", "noscript", "iframe", "frame", "frameset", "object", "embed", "applet", "template", "svg",
    "canvas", "video", "audio", "source", "track", "map", "button", "input", "select", "textarea", "option",
    "optgroup", "datalist", "link", "meta", "head", "title", "nav", "aside", "dialog", "menu", "fieldset",
    "label", "output", "progress", "meter", "picture",
)
# Class/id words of blocks that are never article text; Readability's "unlikely candidates" plus cookie/consent
# banners, share bars and newsletter boxes.
_UNLIKELY = re.compile(
    r"-ad-|(?:^|[\s_-])ads?(?:$|[\s_])|ad-?slot|advert|agegate|ai2html|banner|breadcrumb|combx|comment|community|consent|cookie|"
    r"cover-wrap|disqus|extra|footer|gdpr|header|legends|masthead|menu|modal|newsletter|outbrain|pager|"
    r"pagination|popup|promo|related|remark|replies|rss|share|sharing|shoutbox|sidebar|skip-?link|skyscraper|"
    r"social|sponsor|subscri|supplemental|taboola|toolbar|tweet|yom-remote|widget",
    re.IGNORECASE,
)
_MAYBE = re.compile(r"and|article|body|column|content|main|shadow", re.IGNORECASE)
# Banners that are boilerplate whatever other words their class holds.
_ALWAYS = re.compile(r"cookie|consent|gdpr|onetrust|didomi|newsletter|share-?bar|social-?share|skip-?link",
                     re.IGNORECASE)
_UNLIKELY_ROLES = frozenset(
    {"menu", "menubar", "complementary", "navigation", "alert", "alertdialog", "dialog", "banner", "contentinfo",
     "search", "toolbar"}
)
_HINT_XPATH = "//*[self::article or self::main or @itemprop='articleBody' or @role='main']"
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_PROTECTED_TAGS = frozenset({"html", "body", "article", "main", "table", "tbody", "thead", "tr", "td", "th"})


@functools.lru_cache(maxsize=65536)
def _is_boilerplate_name(name: str) -> bool:
    """Whether a "class id" string marks a boilerplate block; class names repeat, so decisions are cached."""
    return bool(_ALWAYS.search(name) or (_UNLIKELY.search(name) and not _MAYBE.search(name)))


def _is_article_header(name: str) -> bool:
    # "entry-header", "article-header": the block that holds the article's title and byline.
    return "header" in name.lower() and not _ALWAYS.search(name)


def _remove_boilerplate(root: lxml.html.HtmlElement) -> None:
    """Drop never-content tags, hidden elements and blocks whose class/id/role marks them as boilerplate."""
    etree.strip_elements(root, *_DROP_TAGS, with_tail=False)
    _unwrap_or_drop_forms(root)
    for el in root.xpath("//*[self::footer or (self::header and not(.//h1))]"):
        el.drop_tree()
    # Wrappers of the element semantic markup calls the article are never boilerplate, whatever their class.
    protected = {a for el in root.xpath(_HINT_XPATH) for a in el.iterancestors()}
    for el in root.xpath("//*[@class or @id or @style or @role or @hidden or @aria-hidden or @aria-modal]"):
        if el in protected:
            continue
        get = el.get
        tag = el.tag
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
        if tag in _PROTECTED_TAGS or tag == "a":
            continue
        cls, ident = get("class"), get("id")
        if not (cls or ident):
            continue
        name = f"{cls or ''} {ident or ''}"
        if _is_boilerplate_name(name) and not (_is_article_header(name) and el.find(".//h1") is not None):
            el.drop_tree()


def _unwrap_or_drop_forms(root: lxml.html.HtmlElement) -> None:
    # Some sites wrap the whole page in one <form>; keep the contents of large forms, drop small ones (search,
    # login, newsletter sign-up).
    for form in reversed(root.xpath("//form")):
        if len(form.text_content()) > 1000:
            form.drop_tag()
        else:
            form.drop_tree()


# --- main-content scoring -------------------------------------------------------------------------------------

_POSITIVE = re.compile(
    r"article|body|content|entry|hentry|h-entry|main|page|pagination|post|text|blog|story", re.IGNORECASE
)
_NEGATIVE = re.compile(
    r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|foot|footer|footnote|gdpr|masthead|"
    r"media|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|shopping|tags|tool|widget",
    re.IGNORECASE,
)
_TAG_BONUS = {
    "div": 5, "article": 5, "section": 0, "pre": 3, "td": 3, "blockquote": 3, "address": -3, "ol": -3, "ul": -3,
    "dl": -3, "dd": -3, "dt": -3, "li": -3, "form": -3, "h1": -5, "h2": -5, "h3": -5, "h4": -5, "h5": -5,
    "h6": -5, "th": -5,
}
_BLOCKS = "p|div|table|ul|ol|dl|pre|blockquote|section|article|h1|h2|h3|h4|h5|h6|form|figure|header|footer"
_PARAGRAPHS = f"//p | //pre | //td | //blockquote | //div[not({_BLOCKS.replace('|', ' or ')})]"


def _class_weight(el: etree._Element) -> int:
    weight = 0
    for attr in (el.get("class"), el.get("id")):
        if attr:
            if _NEGATIVE.search(attr):
                weight -= 25
            if _POSITIVE.search(attr):
                weight += 25
    return weight


def _link_density(el: etree._Element, text_len: int | None = None) -> float:
    total = len(el.text_content()) if text_len is None else text_len
    if not total:
        return 0.0
    links = sum(len(a.text_content()) for a in el.iter("a"))
    return min(1.0, links / total)


def _score_candidates(root: lxml.html.HtmlElement) -> dict[etree._Element, float]:
    """Readability's paragraph scoring: each paragraph credits its five nearest ancestors, less with distance."""
    scores: dict[etree._Element, float] = {}
    for para in root.xpath(_PARAGRAPHS):
        text = para.text_content()
        n = len(text)
        if n < 25:
            continue
        score = 1.0 + text.count(",") + min(n // 100, 3)
        for level, anc in enumerate(para.iterancestors()):
            if level >= 5 or anc.tag == "html":
                break
            if anc not in scores:
                scores[anc] = _TAG_BONUS.get(anc.tag, 0) + _class_weight(anc)
            scores[anc] += score if level == 0 else score / (2 if level == 1 else level * 3)
    return scores


def _top_candidates(scores: dict[etree._Element, float], n: int = 5) -> list[tuple[float, etree._Element]]:
    """The ``n`` best candidates by final score, raw score times (1 - link density), best first."""
    # final <= raw: visit by raw score and stop once a raw score cannot enter the top n.
    best: list[tuple[float, etree._Element]] = []
    for el, raw in sorted(scores.items(), key=lambda kv: kv[1], reverse=True):
        if len(best) == n and raw <= best[-1][0]:
            break
        final = raw * (1.0 - _link_density(el))
        scores[el] = final
        best.append((final, el))
        best.sort(key=lambda fe: fe[0], reverse=True)
        del best[n:]
    return best


def _common_wrapper(top: etree._Element, best: list[tuple[float, etree._Element]], body: etree._Element
                    ) -> etree._Element:
    """Readability's rule: when three near-best candidates share an ancestor with ``top``, the article is it."""
    top_score = best[0][0]
    others = [el for score, el in best[1:] if score >= 0.75 * top_score]
    if len(others) < 3:
        return top
    ancestor_sets = [set(el.iterancestors()) for el in others]
    parent = top.getparent()
    while parent is not None and parent is not body and parent.tag != "html":
        if sum(parent in anc for anc in ancestor_sets) >= 3:
            return parent
        parent = parent.getparent()
    return top


def _climb(top: etree._Element, scores: dict[etree._Element, float], body: etree._Element) -> etree._Element:
    """Move to an ancestor when it scores higher (the article's wrapper), or when ``top`` is an only child."""
    last = scores.get(top, 0.0)
    threshold = last / 3
    parent = top.getparent()
    while parent is not None and parent is not body and parent.tag != "html":
        if parent in scores:
            pscore = scores[parent]
            if pscore < threshold:
                break
            if pscore > last:
                top = parent
                break
            last = pscore
        parent = parent.getparent()
    parent = top.getparent()
    while parent is not None and parent is not body and parent.tag != "html" and len(parent) == 1:
        top, parent = parent, parent.getparent()
    return top


_SENTENCE_END = re.compile(r"\.( |$)")


def _merge_siblings(top: etree._Element, top_score: float, scores: dict[etree._Element, float]) -> etree._Element:
    """Collect ``top`` and the siblings that score alike (split article bodies, lead paragraphs) in one div."""
    parent = top.getparent()
    if parent is None:
        return top
    threshold = max(10.0, top_score * 0.2)
    top_class = top.get("class", "")
    keep = []
    for sib in parent:
        if not isinstance(sib.tag, str):
            continue
        if sib is top:
            keep.append(sib)
            continue
        bonus = top_score * 0.2 if top_class and sib.get("class", "") == top_class else 0.0
        if sib in scores and scores[sib] + bonus >= threshold:
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


def _semantic_hint(root: lxml.html.HtmlElement) -> etree._Element | None:
    """The element semantic markup names as the article body, if the page names exactly one."""
    found = root.xpath(_HINT_XPATH)
    for kind in (_is_article_body, _is_article, _is_main):
        of_kind = [el for el in found if kind(el)]
        if len(of_kind) == 1:
            return of_kind[0]
        if of_kind:
            return None
    return None


def _is_article_body(el: etree._Element) -> bool:
    return el.get("itemprop") == "articleBody"


def _is_article(el: etree._Element) -> bool:
    return el.tag == "article"


def _is_main(el: etree._Element) -> bool:
    return el.tag == "main" or el.get("role") == "main"


def _is_ancestor(anc: etree._Element, el: etree._Element) -> bool:
    return any(a is anc for a in el.iterancestors())


def _pick_main(root: lxml.html.HtmlElement, body: etree._Element) -> etree._Element | None:
    """The main-content subtree, or None when no block scores (a short page, or one of lists and links)."""
    scores = _score_candidates(root)
    if not scores:
        return None
    best = _top_candidates(scores)
    top_score, top = best[0]
    top = _common_wrapper(top, best, body)
    top = _climb(top, scores, body)
    hint = _semantic_hint(root)
    if hint is not None and hint is not top:
        hint_len = len(hint.text_content())
        top_len = len(top.text_content())
        # The hint wins when it holds (nearly) all the scored text: it then also holds title and lead.
        if _is_ancestor(hint, top) and top_len >= 0.6 * hint_len:
            return hint
        if _is_ancestor(top, hint) and hint_len >= 0.8 * top_len:
            return hint
    return _merge_siblings(top, scores.get(top, top_score), scores)


# --- cleaning inside the main content -------------------------------------------------------------------------

_DATA_TABLE_HINTS = "caption|thead|tfoot|colgroup|col|th"


def _is_data_table(table: etree._Element) -> bool:
    """Readability's test: a table of facts (rendered as a markdown table) rather than a layout grid."""
    if table.get("role") == "presentation" or table.get("datatable") == "0":
        return False
    if table.get("summary") or table.xpath(f"./{' or ./'.join(_DATA_TABLE_HINTS.split('|'))}"):
        return True
    if table.xpath(".//table"):
        return False
    rows = table.xpath("./tr | ./*/tr")
    if len(rows) <= 1:
        return False
    cols = max(len(r) for r in rows)
    if cols <= 1:
        return False
    if table.xpath(".//td//p | .//td//div | .//td//ul | .//td//h1 | .//td//h2 | .//td//h3"):
        return False
    return len(rows) >= 10 or cols > 4 or len(rows) * cols > 10


def _flatten_layout_tables(content: etree._Element) -> None:
    # Layout tables rendered as markdown tables would cut prose into cells; turn their parts into plain blocks.
    for table in reversed(list(content.iter("table"))):
        if _is_data_table(table):
            continue
        for el in table.iter("table", "tbody", "thead", "tfoot", "tr", "td", "th", "caption"):
            el.tag = "div"


def _clean_conditionally(content: etree._Element) -> None:
    """Drop link-dense or content-poor blocks (menus, related-links lists, share bars) inside the content."""
    for el in reversed(list(content.iter("div", "section", "ul", "ol", "table", "dl"))):
        if el is content or el.getparent() is None:
            continue
        if el.tag == "table" and _is_data_table(el):
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
        is_list = el.tag in ("ul", "ol", "dl")
        if is_list:
            if density > 0.5:
                el.drop_tree()
            continue
        paras = len(el.xpath(".//p"))
        imgs = len(el.xpath(".//img"))
        items = len(el.xpath(".//li")) - 100
        if (
            (imgs > 1 and paras / imgs < 0.5)
            or (items > paras)
            or (n < 25 and (imgs == 0 or imgs > 2) and not el.xpath(".//pre | .//table | .//h1 | .//h2 | .//h3"))
            or (weight < 25 and density > (0.2 if n < 200 else 0.33))
            or density > 0.5
        ):
            el.drop_tree()


def _clean_content(content: etree._Element) -> None:
    for h in content.xpath(".//h1 | .//h2"):
        if _class_weight(h) < 0:
            h.drop_tree()
    _clean_conditionally(content)
    for p in content.xpath(".//p[not(.//img)]"):
        if not (p.text_content() or "").strip():
            p.drop_tree()


# --- Wikipedia ------------------------------------------------------------------------------------------------

_WIKI_DROP = (
    "mw-editsection", "reference", "reflist", "references", "mw-references-wrap", "navbox", "navbox-styles",
    "vertical-navbox", "sistersitebox", "metadata", "ambox", "hatnote", "noprint", "mw-empty-elt", "toc",
    "mw-authority-control", "catlinks", "printfooter", "shortdescription", "mw-jump-link", "portalbox",
    "side-box", "sister-bar", "mwe-math-mathml-inline", "mwe-math-mathml-display", "thumb", "mw-cite-backlink",
    "navigation-not-searchable", "mw-kartographer-maplink", "noexcerpt", "refbegin",
)
_WIKI_DROP_XPATH = " | ".join(f".//*[contains(concat(' ', normalize-space(@class), ' '), ' {c} ')]"
                              for c in _WIKI_DROP) + " | .//*[@id='toc'] | .//figure | .//sup[@class='reference']"
_WIKI_TAIL_SECTIONS = frozenset(
    {"references", "see also", "external links", "notes", "further reading", "bibliography", "sources",
     "citations", "footnotes", "notes and references", "references and notes", "works cited", "general references",
     "explanatory notes", "external link", "reference", "note", "literature", "notes and citations"}
)
_HEADING_LEVEL = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _wikipedia_content(root: lxml.html.HtmlElement) -> etree._Element | None:
    """The article body of a MediaWiki page (Wikipedia and its mirrors), found by its structure."""
    found = root.xpath("//*[@id='mw-content-text']")
    if not found:
        return None
    inner = found[0].xpath("./div[contains(concat(' ', @class, ' '), ' mw-parser-output ')]")
    return inner[0] if inner else found[0]


def _heading(el: etree._Element) -> tuple[int, str] | None:
    tag = el.tag
    if tag in _HEADING_LEVEL:
        return _HEADING_LEVEL[tag], el.text_content()
    if tag == "div" and "mw-heading" in (el.get("class") or ""):
        for h in el:
            if h.tag in _HEADING_LEVEL:
                return _HEADING_LEVEL[h.tag], h.text_content()
    return None


def _infobox_to_lines(table: etree._Element) -> None:
    """Rewrite an infobox table as a list of ``label: value`` items, which reads better than a wide grid."""
    box = lxml.html.Element("ul")
    for br in table.iter("br"):
        br.tail = " " + (br.tail or "")
    caption = table.find("caption")
    if caption is not None and caption.text_content().strip():
        etree.SubElement(box, "li").text = _xml_safe(" ".join(caption.text_content().split()))
    for row in table.iter("tr"):
        cells = [c for c in row if c.tag in ("th", "td")]
        texts = [" ".join(c.text_content().split()) for c in cells]
        texts = [t for t in texts if t]
        if not texts:
            continue
        li = etree.SubElement(box, "li")
        li.text = _xml_safe(": ".join(texts) if len(texts) <= 2 else " | ".join(texts))
    box.tail = table.tail
    parent = table.getparent()
    if parent is not None:
        parent.replace(table, box)


def _clean_wikipedia(content: etree._Element) -> None:
    for el in content.xpath(_WIKI_DROP_XPATH):
        el.drop_tree()
    for img in content.xpath(".//img[contains(@class, 'mwe-math-fallback-image')]"):
        img.tag, img.text = "span", _xml_safe(img.get("alt", ""))
    for table in content.xpath(".//table[contains(@class, 'infobox')]"):
        _infobox_to_lines(table)
    dropping: int | None = None
    for child in list(content):
        head = _heading(child) if isinstance(child.tag, str) else None
        if head is not None:
            level, title = head
            if dropping is not None and level <= dropping:
                dropping = None
            if dropping is None and " ".join(title.lower().split()).strip(" []") in _WIKI_TAIL_SECTIONS:
                dropping = level
        if dropping is not None:
            child.drop_tree()


def _wiki_title(root: lxml.html.HtmlElement) -> str:
    found = root.xpath("//*[@id='firstHeading']")
    return " ".join(found[0].text_content().split()) if found else ""


# --- rendering ------------------------------------------------------------------------------------------------

_MIN_MAIN_CHARS = 500  # a main text shorter than this on a long page means the selection went wrong
_KEEP_ATTRS = frozenset({"href"})
# Inline tags html2text renders as their bare text (emphasis is ignored, sup/sub are not marked).
_INLINE_NOOP = (
    "span", "font", "small", "big", "abbr", "acronym", "time", "cite", "u", "ins", "mark", "bdi", "bdo", "data",
    "var", "em", "i", "b", "strong", "sup", "sub", "s", "strike", "del", "q", "dfn", "center", "nobr", "wbr",
)
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_LIST_INDENT = re.compile(r"^  (?=[ ]*(?:[*+-]|\d+\.) )", re.MULTILINE)  # html2text indents even top-level items


def _render(content: etree._Element, url: str | None, links: bool) -> str:
    # html2text is pure Python and costs per tag: first strip, in C, every tag it would render as nothing.
    etree.strip_elements(content, "img", with_tail=False)
    etree.strip_tags(content, *_INLINE_NOOP)
    _cap_nesting(content)
    _flatten_layout_tables(content)
    for caption in list(content.iter("caption")):  # html2text would run a caption into the header row
        table = caption.getparent()
        if table is not None and table.getparent() is not None:
            caption.tag = "p"
            table.addprevious(caption)
    if links:
        _absolute_links(content, url)
    else:
        etree.strip_tags(content, "a")
    drop = {k for el in content.iter() for k in el.attrib if k not in _KEEP_ATTRS}
    if drop:
        etree.strip_attributes(content, *drop)
    html = lxml.html.tostring(content, encoding="unicode", with_tail=False)
    conv = html2text.HTML2Text(bodywidth=0)
    conv.ignore_images = True
    conv.ignore_links = not links
    conv.ignore_emphasis = True
    conv.unicode_snob = True
    conv.skip_internal_links = True
    conv.mark_code = False
    text = conv.handle(html)
    text = _CONTROL.sub("", text.replace("\xa0", " "))
    text = _TRAILING_SPACE.sub("\n", text)
    text = _LIST_INDENT.sub("", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _cap_nesting(content: etree._Element, limit: int = 6) -> None:
    """Flatten quotes and lists nested past ``limit``: html2text prefixes every line with one marker per level,
    so a page of thousands of nested quotes would come out quadratic in size."""
    deep, depth = [], 0
    for event, el in etree.iterwalk(content, events=("start", "end"), tag=("blockquote", "ul", "ol", "dl")):
        if event == "start":
            depth += 1
            if depth > limit:
                deep.append(el)
        else:
            depth -= 1
    for el in deep:
        el.tag = "div"


def _absolute_links(content: etree._Element, url: str | None) -> None:
    for a in content.iter("a"):
        href = (a.get("href") or "").strip()
        if not href or href.startswith(("javascript:", "#", "data:", "mailto:")):
            a.attrib.pop("href", None)
        elif url:
            try:
                a.set("href", urljoin(url, href))
            except ValueError:
                a.attrib.pop("href", None)


# --- entry point ----------------------------------------------------------------------------------------------


def extract(html: bytes | str, url: str | None = None, *, links: bool = False) -> str:
    """Convert an HTML page to clean markdown holding its main content.

    Args:
        html: The page, as raw bytes (charset from BOM, UTF-8 validity, or ``<meta charset>``) or as text.
        url: The page's address: resolves relative links and recognises Wikipedia by host.
        links: Keep hyperlinks as markdown ``[text](url)``; by default only the anchor text is kept.

    Returns:
        Markdown with headings, paragraphs, lists and tables of the main content, or ``""`` when the input holds
        nothing readable (empty, binary, unparsable). Never raises on bad input.
    """
    try:
        return _extract(html, url, links)
    except Exception:  # a hostile page must never take the caller down
        logger.warning("extraction failed for %s", url or "<page>", exc_info=True)
        return ""


def _extract(html: bytes | str, url: str | None, links: bool) -> str:
    if isinstance(html, (bytes, bytearray, memoryview)):
        text = _decode(bytes(html))
    elif isinstance(html, str):
        text = None if _looks_binary(html[:4096]) else html
    else:
        return ""
    if not text:
        return ""
    root = _parse(text)
    if root is None:
        return ""
    wiki = _wikipedia_content(root)
    if wiki is not None:
        etree.strip_elements(root, *_DROP_TAGS, with_tail=False)
        _clean_wikipedia(wiki)
        title = _wiki_title(root)
        body = _render(wiki, url, links)
        return f"# {title}\n\n{body}" if title and body else body
    _remove_boilerplate(root)
    body = _body(root)
    body_chars = len(body.text_content())
    # On a page this short there is nothing to choose between: keep all that survived boilerplate removal.
    content = _pick_main(root, body) if body_chars > _MIN_MAIN_CHARS else None
    if content is None:
        return _render(body, url, links)
    _clean_content(content)
    main = _render(content, url, links)
    if len(main) >= _MIN_MAIN_CHARS or body_chars < 2 * len(main) + _MIN_MAIN_CHARS:
        return main
    # The selection kept a fragment of a page that has much more text: better the whole boilerplate-free body
    # than a caption or a byline. The tree was rearranged by the selection, so parse again.
    root = _parse(text)
    if root is None:
        return main
    _remove_boilerplate(root)
    return _render(_body(root), url, links)


def _body(root: lxml.html.HtmlElement) -> etree._Element:
    body = root.find("body")
    return root if body is None else body
