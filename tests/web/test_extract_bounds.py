"""Tests of the pre-parse bounds and of hostile pages: each gives a clear result, never an exception.

Times are measured in ``python -m benchmarks.perf.extract --hostile``, not here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drgym.errors import ConfigError
from drgym.web._extract_bounds import PageLimits, bound_page, cut_bytes
from drgym.web.extract import EXTRACTORS, _decode, _extract, extract

WORDS = "Words of a paragraph, with commas, long enough to read as prose. "
START_TAG = re.compile(r"<[a-zA-Z]")


def test_limits_are_checked():
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(ConfigError, match="PageLimits.max_tags must be a positive integer"):
            PageLimits(max_tags=bad)  # type: ignore[arg-type]


def test_small_pages_pass_unchanged():
    page = '<html><body><div class="a" id="b"><p>' + WORDS + "</p></div></body></html>"
    assert bound_page(page, PageLimits()) == (page, 4, "")
    assert bound_page(page, PageLimits())[0] is page


def test_tag_count_is_capped_at_a_tag_boundary():
    page = "<html><body>" + "".join(f"<p>para {i}</p>" for i in range(1_000)) + "</body></html>"
    cut, tags, rest = bound_page(page, PageLimits(max_tags=100))
    assert tags == 100 and cut + rest == page and rest.startswith("<p>para 98</p>")
    assert len(START_TAG.findall(cut)) == 100
    assert cut.endswith("<p>para 97</p>")  # html and body are two of the hundred


def test_attributes_past_the_cap_are_dropped_and_the_text_kept():
    attrs = " ".join(f'data-a{i}="v{i}"' for i in range(40_000))
    page = f"<html><body><div {attrs} class='x'><p>{WORDS}</p></div></body></html>"
    cut, _, _ = bound_page(page, PageLimits(max_attributes=10))
    assert 'data-a9="v9"' in cut and "data-a10=" not in cut and "class='x'" not in cut
    assert cut.endswith(f"><p>{WORDS}</p></div></body></html>")
    for extractor in EXTRACTORS:
        assert WORDS.strip() in extract(page, extractor=extractor)


def test_long_tags_with_few_attributes_are_kept():
    src = "data:image/png;base64," + "A" * 10_000  # an inline image: a long tag, two attributes
    page = f'<p>before <img src="{src}" alt="x"> after</p>'
    assert bound_page(page, PageLimits(max_attributes=2)) == (page, 2, "")


def test_unclosed_tag_starts_scan_linearly():
    # "<a<a<a..." without any ">": every character belongs to one match, the scan stays linear.
    page = "<a" * 300_000
    cut, _, rest = bound_page(page, PageLimits(max_tags=1_000))
    assert len(cut) == 2_000 and cut + rest == page


def test_text_is_cut_at_max_chars_before_a_tag():
    page = "<p>" + "x" * 100 + "</p><p>" + "y" * 100 + "</p>"
    cut, tags, _ = bound_page(page, PageLimits(max_chars=150))
    assert (cut, tags) == ("<p>" + "x" * 100 + "</p>", 1)  # before the last tag that starts inside the limit
    assert cut_bytes(page.encode(), PageLimits(max_chars=150)) == cut.encode()
    assert cut_bytes(b"x" * 100, PageLimits(max_chars=10)) == b"x" * 10


def test_large_pages_take_the_fast_path():
    page = (Path(__file__).parent / "pages" / "article.html").read_bytes()
    small = PageLimits(max_tags_trafilatura=10)
    assert extract(page, limits=small) == extract(page, extractor="fast") != extract(page)


def test_bytes_cut_inside_a_character_decode():
    data = ("<p>" + "é" * 50 + "</p>").encode()
    out = extract(data, limits=PageLimits(max_chars=20))
    assert out.startswith("é") and "\ufffd" not in out.rstrip("\ufffd")


@pytest.mark.slow
@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_page_of_50_mb_on_one_line(extractor):
    page = b"<html><body><p>" + WORDS.encode() * (50_000_000 // len(WORDS) + 1) + b"</p></body></html>"
    assert len(page) > 50_000_000
    out = extract(page, extractor=extractor)
    assert out.startswith(WORDS.strip())
    assert len(out) <= PageLimits().max_chars


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_100000_links(extractor):
    page = (
        "<html><body>" + "".join(f'<a href="/p{i}">link {i}</a> ' for i in range(100_000)) + "</body></html>"
    )
    out = _extract(page, None, False, extractor)  # no safety net: the pipeline itself must cope
    assert "link 0 link 1" in out and "link 99999" in out  # past 25,000 tags as plain text


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_many_tiny_paragraphs_are_cut(extractor):
    page = "<html><body>" + "<p>x</p>" * 240_000 + "</body></html>"
    out = _extract(page, None, False, extractor)
    assert out.count("x") == 240_000  # every word kept: past the tag cap as merged plain paragraphs
    assert out.count("\n\n") < PageLimits().max_tags + 1_000


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize("depth", [20_000, 50_000])
def test_deep_nesting_keeps_its_text(extractor, depth):
    page = "<div>" * depth + "DEEP-TEXT " + WORDS + "</div>" * depth
    assert "DEEP-TEXT" in _extract(page, None, False, extractor)


def test_words_past_the_tag_cap_stay_in_order_without_scripts():
    page = "<p>first</p>" + "<p>middle</p><script>SCRIPT-PAST-CAP</script>" * 100 + "<p>last words</p>"
    out = extract(page, extractor="fast", limits=PageLimits(max_tags=10))
    assert out.startswith("first") and out.endswith("last words") and out.count("middle") == 100
    assert "SCRIPT-PAST-CAP" not in out


def test_mixed_utf8_and_cp1252_both_decode():
    # A UTF-8 page with a pasted windows-1252 passage: neither part may turn to mojibake.
    page = (
        "<html><body><p>Café crème – déjà vu. </p>".encode()
        + "<p>naïve façade costs €5</p>".encode("cp1252")
        + b"</body></html>"
    )
    text = _decode(page)
    assert "Café crème – déjà vu." in text and "naïve façade costs €5" in text
    assert "naïve façade costs €5" in extract(page) and "Café crème" in extract(page)


def test_legacy_pages_without_utf8_stay_cp1252():
    page = "<p>naïve façade costs €5 – “quoted”</p>".encode("cp1252")
    assert "naïve façade costs €5 – “quoted”" in _decode(page)


def test_broken_utf8_declared_as_utf8():
    page = b'<meta charset="utf-8"><p>caf\xc3\xa9 and a stray \xff\xfe byte pair, then \xe2\x82\xac</p>'
    out = extract(page)
    assert "café" in out and "€" in out


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize(
    "page",
    [b"", b"<html><body></body></html>", b"<html><body>   </body></html>", bytes(range(256)) * 4096],
    ids=["nothing", "empty-body", "blank-body", "binary"],
)
def test_empty_and_binary_bodies_give_empty_text(page, extractor):
    assert extract(page, extractor=extractor) == ""


def test_a_trafilatura_failure_falls_back_to_the_fast_path(monkeypatch):
    import drgym.web._extract_trafilatura as traf

    page = (Path(__file__).parent / "pages" / "article.html").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("library bug")

    monkeypatch.setattr(traf, "trafilatura_markdown", broken)
    assert _extract(page, None, False, "trafilatura") == extract(page, extractor="fast") != ""
