"""Cut page text into viewports for the browsing agent, by characters or by tokens.

The reader LLM sees a page one viewport at a time, so a cut should fall where a reader would pause: at a
paragraph break if one lies in the second half of the window, else at a line break there, else at any
whitespace; only a single "word" longer than the window (a data URI, a minified blob) is cut inside. Segments
carry no leading or trailing whitespace and, joined, hold every non-whitespace character of the text in order.

Both functions are linear in the text: each cut scans one window in C (``re``), and ``segment_tokens`` encodes
each segment a few times while fitting it, never the whole text per cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from drgym.errors import ConfigError

__all__ = ["segment_text", "segment_tokens"]

_NON_SPACE = re.compile(r"\S")
# Greedy ``.*`` runs to the window's end and backtracks: the match ends at the *last* boundary in the window.
_LAST_PARAGRAPH = re.compile(r"(?s:.*)(\n[^\S\n]*\n)")
_LAST_LINE = re.compile(r"(?s:.*)(\n)")
_LAST_SPACE = re.compile(r"(?s:.*)(\s)")


def _skip_space(text: str, pos: int) -> int:
    m = _NON_SPACE.search(text, pos)
    return m.start() if m else len(text)


def _cut(text: str, pos: int, limit: int) -> int:
    """End of the segment starting at ``pos`` (a non-space) holding at most ``limit`` characters."""
    if len(text) - pos <= limit:
        return len(text)
    end = pos + limit + 1  # the character just past the window may be the whitespace to cut at
    half = pos + limit // 2
    for pattern in (_LAST_PARAGRAPH, _LAST_LINE):
        m = pattern.match(text, pos, end)
        if m and m.start(1) >= half:
            return m.start(1)
    m = _LAST_SPACE.match(text, pos, end)
    if m and m.start(1) > pos:
        return m.start(1)
    return pos + limit  # one word longer than the window: cut inside it


def segment_text(text: str, max_chars: int = 40960) -> list[str]:
    """Cut ``text`` into segments of at most ``max_chars`` characters, at whitespace where possible.

    Args:
        text: The page text (markdown from ``extract``).
        max_chars: The most characters in one segment; the paper's browsing agent used 40,960.

    Returns:
        The segments in order, stripped of surrounding whitespace; ``[]`` for empty or blank text.

    Raises:
        ConfigError: ``max_chars`` is below 1.
    """
    if max_chars < 1:
        raise ConfigError(f"max_chars must be at least 1, got {max_chars}")
    segments = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        end = _cut(text, pos, max_chars)
        segments.append(text[pos:end].rstrip())
        pos = _skip_space(text, end)
    return segments


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        return lambda s: len(encode(s))
    if callable(tokenizer):
        return lambda s: int(tokenizer(s))
    raise ConfigError(
        "tokenizer must have encode(str) -> list[int] or be a callable str -> int, "
        f"got {type(tokenizer).__name__}"
    )


def segment_tokens(text: str, max_tokens: int, tokenizer: Any) -> list[str]:
    """Cut ``text`` into segments of at most ``max_tokens`` tokens each, at whitespace where possible.

    Each segment is sized from a running characters-per-token estimate, then checked by encoding exactly that
    segment and grown or shrunk a few times, so the whole text is encoded a small constant number of times.
    Tokens the tokenizer adds on its own (BOS/EOS) count, which only makes segments safely smaller.

    Args:
        text: The page text.
        max_tokens: The most tokens in one segment, as the tokenizer counts the segment's text.
        tokenizer: An object with ``encode(str) -> list[int]`` (a ``transformers`` tokenizer works), or a
            callable returning the token count of a string.

    Returns:
        The segments in order, stripped of surrounding whitespace; ``[]`` for empty or blank text.

    Raises:
        ConfigError: ``max_tokens`` is below 1, the tokenizer has neither form, or it counts more than
            ``max_tokens`` tokens for a single character.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
    count = _token_counter(tokenizer)
    segments: list[str] = []
    pos = _skip_space(text, 0)
    if pos >= len(text):
        return segments
    sample = text[pos : pos + 4096].rstrip()
    ratio = max(len(sample) / max(count(sample), 1), 0.05)  # characters per token
    while pos < len(text):
        end, tokens = _fit(text, pos, max_tokens, count, ratio)
        segment = text[pos:end].rstrip()
        segments.append(segment)
        if tokens > 0 and end < len(text):
            ratio = len(segment) / tokens
        pos = _skip_space(text, end)
    return segments


def _fit(text: str, pos: int, max_tokens: int, count: Callable[[str], int], ratio: float) -> tuple[int, int]:
    """End of the longest segment from ``pos`` within ``max_tokens``, found in a few encodes; and its count.

    The character budget is scaled by the token counts seen (a secant step), grown while the segment fits and
    is under 90% full, shrunk while it overflows. Cuts snap to paragraph or line breaks, so several budgets
    often give the same segment: each distinct segment is encoded once.
    """
    counted: dict[int, int] = {}
    limit = max(1, int(max_tokens * ratio))
    best_end, best_limit = -1, 0
    too_big: int | None = None  # smallest character budget known to overflow
    for _ in range(32):
        end = _cut(text, pos, limit)
        if end not in counted:
            counted[end] = count(text[pos:end].rstrip())
        tokens = counted[end]
        if tokens <= max_tokens:
            if end > best_end:
                best_end, best_limit = end, limit
            if end >= len(text) or tokens >= 0.9 * max_tokens:
                break
            new = max(limit + 1, int(limit * max_tokens / max(tokens, 1) * 0.99))
            if too_big is not None:
                new = min(new, (limit + too_big) // 2)
        else:
            too_big = limit if too_big is None else min(too_big, limit)
            new = min(limit - 1, int((end - pos) * max_tokens / tokens * 0.97))
            if best_end >= 0:
                new = max(new, (best_limit + limit) // 2)
        if new < 1 or new <= best_limit or (too_big is not None and new >= too_big):
            break
        limit = new
    if best_end >= 0:
        return best_end, counted[best_end]
    return _hard_cut(text, pos, max_tokens, count, too_big or 1)


def _hard_cut(text: str, pos: int, max_tokens: int, count: Callable[[str], int], hi: int) -> tuple[int, int]:
    """Largest prefix of the text at ``pos``, shorter than ``hi``, within the budget (binary search)."""
    lo, hi = 0, min(len(text) - pos, hi - 1)
    lo_tokens = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        tokens = count(text[pos : pos + mid].rstrip())
        if tokens <= max_tokens:
            lo, lo_tokens = mid, tokens
        else:
            hi = mid - 1
    if lo == 0:
        raise ConfigError(
            f"max_tokens={max_tokens} is too small: the tokenizer counts {count(text[pos])} tokens for the "
            f"single character {text[pos]!r}"
        )
    return pos + lo, lo_tokens
