"""Tests of viewport segmentation: limits hold, content survives, cuts fall at whitespace."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drgym.errors import ConfigError
from drgym.web.segment import segment_text, segment_tokens


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _check_invariants(text: str, segments: list[str]) -> None:
    """Non-whitespace content kept in order; no empty or padded segment; cuts at whitespace unless forced."""
    assert _squeeze("".join(segments)) == _squeeze(text)
    pos = 0
    for i, seg in enumerate(segments):
        assert seg and seg == seg.strip()
        start = text.index(seg, pos)
        assert not text[pos:start].strip(), "a segment skipped over content"
        pos = start + len(seg)
        if i < len(segments) - 1 and not text[pos].isspace():
            # A cut inside a word happens only for a whitespace-free run that fills the whole segment.
            assert not any(c.isspace() for c in seg), (seg, text[pos])
    assert not text[pos:].strip()


class CountingTokenizer:
    """A subword-like tokenizer: BOS, then one token per started 3 characters of each word and per newline.

    It counts the characters it encodes, so tests can check that long texts are not re-encoded per cut.
    """

    def __init__(self) -> None:
        self.encoded_chars = 0

    def encode(self, text: str) -> list[int]:
        self.encoded_chars += len(text)
        n = 1 + sum(math.ceil(len(w) / 3) for w in text.split()) + text.count("\n")
        return [0] * n


# --- segment_text -------------------------------------------------------------------------------------------


def test_empty_and_blank_text_give_no_segments():
    assert segment_text("") == []
    assert segment_text(" \n\t \u3000\n") == []


def test_short_text_is_one_stripped_segment():
    assert segment_text("  hello world \n") == ["hello world"]


def test_prefers_paragraph_breaks():
    paras = [f"Paragraph {i} " + "word " * 12 for i in range(10)]
    text = "\n\n".join(p.strip() for p in paras)
    segments = segment_text(text, 200)
    assert all(len(s) <= 200 for s in segments)
    # Every segment is whole paragraphs: starts a paragraph and ends one.
    assert all(s.startswith("Paragraph") and s.endswith("word") for s in segments)
    assert len(segments) == 5


def test_prefers_line_breaks_over_spaces():
    lines = [f"line {i} " + "x" * 20 for i in range(20)]
    text = "\n".join(lines)
    segments = segment_text(text, 100)
    assert all(len(s) <= 100 for s in segments)
    assert all(s.startswith("line ") and s.endswith("x" * 20) for s in segments)


def test_a_paragraph_break_early_in_the_window_is_not_taken():
    text = "short.\n\n" + "word " * 40  # a cut at the break would leave a 6-character segment
    segments = segment_text(text, 100)
    assert len(segments[0]) > 50


def test_cuts_at_spaces_when_there_is_no_line_break():
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    segments = segment_text(text, 12)
    assert segments == ["alpha beta", "gamma delta", "epsilon zeta", "eta theta", "iota kappa"]


def test_hard_cuts_a_word_longer_than_the_limit():
    text = "intro " + "A" * 25 + " outro"
    assert segment_text(text, 10) == ["intro", "A" * 10, "A" * 10, "A" * 5, "outro"]


def test_default_limit_matches_the_paper_viewport():
    text = ("word " * 2000 + "\n\n") * 10  # about 100,000 characters
    segments = segment_text(text)
    assert all(len(s) <= 40960 for s in segments)
    assert len(segments) == 3


def test_long_text_is_linear_enough():
    text = ("Some sentence here, and another one.\n" * 50 + "\n") * 2000  # about 3.8 MB
    segments = segment_text(text, 4096)
    assert all(len(s) <= 4096 for s in segments)
    assert _squeeze("".join(segments)) == _squeeze(text)


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_limit_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=re.escape(f"max_chars must be at least 1, got {bad}")):
        segment_text("text", bad)


@settings(max_examples=300, deadline=None)
@given(text=st.text(), max_chars=st.integers(min_value=1, max_value=60))
def test_segment_text_invariants(text, max_chars):
    segments = segment_text(text, max_chars)
    assert all(len(s) <= max_chars for s in segments)
    _check_invariants(text, segments)


WORDY = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=15),
        st.sampled_from([" ", "\n", "\n\n", "\t", "  ", "\u00a0", "\u2003"]),
    ),
    max_size=80,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=WORDY, max_chars=st.integers(min_value=1, max_value=40))
def test_segment_text_invariants_on_wordy_text(text, max_chars):
    segments = segment_text(text, max_chars)
    assert all(len(s) <= max_chars for s in segments)
    _check_invariants(text, segments)


# --- segment_tokens -----------------------------------------------------------------------------------------


def test_tokens_with_an_encode_tokenizer():
    tok = CountingTokenizer()
    text = "\n\n".join("para " + "abcdef " * 30 for _ in range(10))
    segments = segment_tokens(text, 50, tok)
    assert all(len(tok.encode(s)) <= 50 for s in segments)
    assert all(len(tok.encode(s)) >= 30 for s in segments[:-1])  # segments are filled, not timid
    _check_invariants(text, segments)


def test_tokens_with_a_counting_callable():
    text = "one two three four five six seven eight nine ten eleven"
    segments = segment_tokens(text, 4, lambda s: len(s.split()))
    assert segments == ["one two three four", "five six seven eight", "nine ten eleven"]


def test_tokens_do_not_reencode_the_whole_text_per_cut():
    tok = CountingTokenizer()
    text = ("Sentence with several words, and commas, in it.\n" * 20 + "\n") * 500  # about 500,000 characters
    segments = segment_tokens(text, 512, tok)
    assert len(segments) > 100
    assert all(len(CountingTokenizer().encode(s)) <= 512 for s in segments)
    # Fitting a segment takes a few encodes of about its own size: linear in the text, small constant.
    assert tok.encoded_chars < 6 * len(text)


def test_tokens_hard_cut_a_word_over_the_budget():
    tok = CountingTokenizer()
    text = "start " + "z" * 100 + " end"
    segments = segment_tokens(text, 5, tok)
    assert all(len(tok.encode(s)) <= 5 for s in segments)
    _check_invariants(text, segments)
    assert any(set(s) == {"z"} for s in segments)


def test_tokens_with_a_real_byte_level_tokenizer():
    transformers = pytest.importorskip("transformers")
    tok = transformers.ByT5Tokenizer()  # byte-level: builds without files; adds one EOS token
    text = "Zürich – Genève: 270 km. " * 40 + "\n\n" + "naïve café " * 30
    segments = segment_tokens(text, 64, tok)
    assert all(len(tok.encode(s)) <= 64 for s in segments)
    assert all(len(tok.encode(s)) > 40 for s in segments[:-1])
    _check_invariants(text, segments)


def test_tokens_empty_text():
    assert segment_tokens("", 10, CountingTokenizer()) == []
    assert segment_tokens("  \n ", 10, CountingTokenizer()) == []


def test_tokens_bad_budget_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("max_tokens must be at least 1, got 0")):
        segment_tokens("text", 0, CountingTokenizer())


def test_tokens_budget_below_one_character_is_a_config_error():
    # Every string costs BOS plus one token: a budget of 1 cannot hold any character.
    with pytest.raises(
        ConfigError, match=r"max_tokens=1 is too small: the tokenizer counts 2 tokens for the single"
    ):
        segment_tokens("abc def", 1, CountingTokenizer())


def test_tokens_tokenizer_of_the_wrong_kind_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"tokenizer must have encode\(str\) -> list\[int\] or be a callable"
    ):
        segment_tokens("text", 5, object())


@settings(max_examples=200, deadline=None)
@given(text=WORDY, max_tokens=st.integers(min_value=2, max_value=30))
def test_segment_tokens_invariants(text, max_tokens):
    tok = CountingTokenizer()
    segments = segment_tokens(text, max_tokens, tok)
    assert all(len(tok.encode(s)) <= max_tokens for s in segments)
    _check_invariants(text, segments)


@settings(max_examples=200, deadline=None)
@given(text=st.text(), max_tokens=st.integers(min_value=1, max_value=20))
def test_segment_tokens_invariants_with_a_character_count(text, max_tokens):
    segments = segment_tokens(text, max_tokens, len)
    assert all(len(s) <= max_tokens for s in segments)
    _check_invariants(text, segments)
