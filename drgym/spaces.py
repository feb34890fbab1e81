"""Text spaces that accept real text.

Gymnasium's ``Text`` space defaults to an alphanumeric charset, so ``Text(100).contains("Hello, world.")`` is
False and ``check_env`` rejects ordinary web text. ``UnicodeText`` keeps ``Text``'s API (it is a subclass, so
wrappers and tooling that dispatch on ``Text`` keep working) but contains *any* Python ``str`` within the length
bounds. ``sample()`` draws from a mixed charset (ASCII, punctuation, accented and non-Latin letters, protocol tag
characters) so random actions exercise the parser.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

__all__ = ["UnicodeText"]

_SAMPLE_CHARSET = frozenset(
    string.ascii_letters + string.digits + string.punctuation + " \n\t" + "éüßçñøåæœ" + "Ωπλжыя中文日本한국" + "—“”‘’…€"
)


class UnicodeText(Text):
    """A string space that contains any Unicode string of ``min_length`` to ``max_length`` characters."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length=max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        """Any ``str`` whose length is within bounds; no charset restriction."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    __hash__ = None  # type: ignore[assignment]  # mutable rng state; same as gymnasium spaces
