"""Passages → HTML pages that look like a real website: the article inside everything a reader must drop.

Each article page carries the boilerplate real pages have around their text (a header with a search form,
a navigation bar, a sidebar of links, a breadcrumb, a share bar, a footer, a cookie-consent banner and the
scripts that drive it), so the page reader meets the extraction problem of the web, not clean text. Titles
and texts come from corpora and are untrusted: every value is escaped for its context (element text,
attribute, URL path) before it reaches the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "SITE_NAME",
    "ArticleView",
    "SearchHit",
    "article_path",
    "render_article",
    "render_home",
    "render_not_found",
    "render_search",
]

SITE_NAME = "MiniWeb"
"""The site's name, shown in page titles and the header (never part of an article's text)."""

_STYLE = (
    "body{font-family:Georgia,serif;margin:0;color:#202122}"
    ".site-header{display:flex;gap:1em;padding:.5em 1em;background:#f8f9fa}"
    ".layout{display:flex}.sidebar{width:14em;padding:1em}main{flex:1;padding:1em 2em}"
    ".cookie-consent{position:fixed;bottom:0;left:0;right:0;background:#333;color:#fff;padding:1em}"
)
_COOKIE_SCRIPT = (
    "(function(){var b=document.getElementById('cookie-banner');"
    "if(document.cookie.indexOf('consent=1')>=0){b.remove();return;}"
    "b.querySelector('button').addEventListener('click',function(){"
    "document.cookie='consent=1;path=/;max-age=31536000';b.remove();});})();"
)


@dataclass(frozen=True)
class ArticleView:
    """What one article page shows: its title, its paragraphs in order, and where the text came from."""

    title: str
    paragraphs: Sequence[str]
    sources: Sequence[str] = ()


@dataclass(frozen=True)
class SearchHit:
    """One row of the HTML search-results page."""

    title: str
    url: str
    snippet: str


def _text(value: str) -> str:
    """Escape for element text and for quoted attribute values alike."""
    return html.escape(value, quote=True)


def article_path(title: str) -> str:
    """The site path of the article called ``title``: ``/wiki/`` and the title, every reserved byte quoted.

    Quoting with no safe characters keeps the mapping one-to-one (``AC/DC`` → ``/wiki/AC%2FDC``) and keeps
    the URL free of characters (spaces, brackets, quotes) that would end it inside running text.
    """
    return "/wiki/" + quote(title, safe="")


def _page(title: str, body: str, *, corpus: str) -> str:
    """The shared frame: head, site header with a search form, navigation bar, footer, cookie banner."""
    meta = json.dumps({"site": SITE_NAME, "corpus": corpus}).replace("<", "\\u003c")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)} - {SITE_NAME}</title>\n"
        '<link rel="stylesheet" href="/static/site.css">\n'
        f"<style>{_STYLE}</style>\n"
        f"<script>window.siteConfig={meta};window.dataLayer=window.dataLayer||[];</script>\n"
        "</head>\n<body>\n"
        '<header class="site-header">'
        f'<a class="logo" href="/">{SITE_NAME}</a>'
        '<form class="search-form" action="/search" method="get" role="search">'
        '<input type="search" name="q" placeholder="Search MiniWeb">'
        '<button type="submit">Search</button></form></header>\n'
        '<nav class="top-nav" aria-label="Main"><ul>'
        '<li><a href="/">Main page</a></li><li><a href="/search?q=">All articles</a></li>'
        '<li><a href="/about">About MiniWeb</a></li><li><a href="/contact">Contact us</a></li>'
        '<li><a href="/donate">Donate</a></li></ul></nav>\n'
        f"{body}\n"
        '<footer class="site-footer"><p>This page was served by the MiniWeb offline test site. '
        "Text is available under the Creative Commons Attribution-ShareAlike License.</p>"
        '<p><a href="/privacy">Privacy policy</a> · <a href="/terms">Terms of use</a> · '
        '<a href="/contact">Contact</a></p></footer>\n'
        '<div id="cookie-banner" class="cookie-consent" role="dialog" aria-live="polite">'
        "<p>We use cookies to remember your preferences and to measure traffic. "
        "By continuing to browse you agree to our use of cookies.</p>"
        '<button type="button">Accept all cookies</button></div>\n'
        f"<script>{_COOKIE_SCRIPT}</script>\n"
        "</body>\n</html>\n"
    )


def _link_list(heading: str, links: Sequence[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{_text(url)}">{_text(text)}</a></li>' for text, url in links)
    return f"<h2>{_text(heading)}</h2><ul>{items}</ul>"


def render_article(article: ArticleView, *, corpus: str, related: Sequence[str] = ()) -> str:
    """The full HTML page of one article; ``related`` are titles linked from the sidebar."""
    paragraphs = "\n".join(f"<p>{_text(p)}</p>" for p in article.paragraphs)
    sources = sorted({s for s in article.sources if s})
    attribution = (
        f'<p class="attribution">Source: {_text(", ".join(sources))} (corpus {_text(corpus)}).</p>'
        if sources
        else ""
    )
    sidebar = _link_list("Related articles", [(t, article_path(t)) for t in related])
    body = (
        '<div class="layout">'
        f'<aside class="sidebar" id="sidebar">{sidebar}'
        '<h2>Tools</h2><ul><li><a href="/print">Printable version</a></li>'
        '<li><a href="/cite">Cite this page</a></li></ul></aside>\n'
        '<main id="content"><article>\n'
        f'<div class="breadcrumb"><a href="/">Main page</a> › Articles › {_text(article.title)}</div>\n'
        f"<h1>{_text(article.title)}</h1>\n"
        f"{paragraphs}\n{attribution}\n"
        '<div class="share-bar">Share this article: <a href="/share/twitter">Twitter</a> '
        '<a href="/share/facebook">Facebook</a> <a href="/share/email">Email</a></div>\n'
        "</article></main></div>"
    )
    return _page(article.title, body, corpus=corpus)


def render_search(query: str, hits: Sequence[SearchHit], *, corpus: str) -> str:
    """The HTML results page (``/search`` without ``format=json``), as a browser would see it."""
    rows = "".join(
        f'<li class="result"><h3><a href="{_text(h.url)}">{_text(h.title)}</a></h3>'
        f'<p class="content">{_text(h.snippet)}</p></li>'
        for h in hits
    )
    found = f'<ol class="results">{rows}</ol>' if hits else "<p>No results.</p>"
    body = f'<main id="content"><h1>Results for {_text(query)}</h1>{found}</main>'
    return _page(f"{query} - search", body, corpus=corpus)


def render_home(titles: Sequence[str], *, corpus: str, total: int) -> str:
    """The main page: what the site is, and links to the first articles."""
    links = _link_list("Some articles", [(t, article_path(t)) for t in titles])
    body = (
        f'<main id="content"><h1>{SITE_NAME}</h1>'
        f"<p>An offline encyclopedia of {total} articles from the corpus {_text(corpus)}.</p>{links}</main>"
    )
    return _page("Main page", body, corpus=corpus)


def render_not_found(path: str, *, corpus: str) -> str:
    """The 404 page (served with status 404)."""
    body = (
        '<main id="content"><h1>Not found</h1>'
        f"<p>MiniWeb has no page at {_text(path)}. Try the search box.</p></main>"
    )
    return _page("Not found", body, corpus=corpus)
