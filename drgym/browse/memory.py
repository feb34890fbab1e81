"""What the browsing agent has gathered in one episode, bounded so it never grows without limit.

The environment creates one :class:`EpisodeMemory` per episode and drops it at the episode's end. Readers add the
notes they keep, piece by piece; the agent shows the memory to the model as "information gathered so far".
When the total size passes ``max_chars`` the oldest pieces are dropped first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from drgym.errors import ConfigError

__all__ = ["EpisodeMemory"]


@dataclass(frozen=True)
class _Piece:
    seq: int
    url: str
    text: str


class EpisodeMemory:
    """Notes per URL, in the order they were gathered, at most ``max_chars`` characters in all.

    Args:
        max_chars: Upper bound on the stored note text; the oldest pieces are dropped beyond it.
    """

    def __init__(self, max_chars: int = 20_000) -> None:
        if max_chars < 1:
            raise ConfigError(f"EpisodeMemory max_chars must be at least 1, got {max_chars}")
        self.max_chars = max_chars
        self._pieces: deque[_Piece] = deque()
        self._chars = 0
        self._next_seq = 0

    @property
    def total_chars(self) -> int:
        """Characters of note text held now (never more than ``max_chars``)."""
        return self._chars

    @property
    def num_pieces(self) -> int:
        """Pieces of notes held now. (No ``__len__``: an empty memory must not be falsy in ``memory or ...``.)"""
        return len(self._pieces)

    def add(self, url: str, text: str) -> None:
        """Append a piece of notes for ``url``; blank text is ignored. Trims the oldest pieces if needed."""
        text = text.strip()
        if not text:
            return
        self._pieces.append(_Piece(self._next_seq, url, text))
        self._next_seq += 1
        self._chars += len(text)
        self._trim()

    def mark(self) -> int:
        """A position in the history; ``notes_for(url, since=mark)`` returns only what was added after it."""
        return self._next_seq

    def notes_for(self, url: str, *, since: int = 0) -> str:
        """The notes still held for ``url`` (added at or after ``since``), joined by newlines."""
        return "\n".join(p.text for p in self._pieces if p.url == url and p.seq >= since)

    def urls(self) -> list[str]:
        """URLs with notes held, in the order they were first gathered."""
        return list(dict.fromkeys(p.url for p in self._pieces))

    def render(self, max_chars: int | None = None) -> str:
        """The notes grouped by URL, for a prompt; keeps the most recent pieces within ``max_chars``."""
        budget = self.max_chars if max_chars is None else max_chars
        kept: list[_Piece] = []
        used = 0
        for piece in reversed(self._pieces):
            cost = len(piece.text) + len(piece.url) + 8
            if used + cost > budget:
                room = budget - used - len(piece.url) - 8
                if not kept and room > 0:  # the newest piece alone is too long: keep its end
                    kept.append(_Piece(piece.seq, piece.url, piece.text[-room:]))
                break
            kept.append(piece)
            used += cost
        by_url: dict[str, list[str]] = {}
        for piece in sorted(kept, key=lambda p: p.seq):
            by_url.setdefault(piece.url, []).append(piece.text)
        return "\n\n".join(f"[{url}]\n" + "\n".join(texts) for url, texts in by_url.items())

    def clear(self) -> None:
        """Forget everything (the environment calls this at the end of an episode)."""
        self._pieces.clear()
        self._chars = 0

    def _trim(self) -> None:
        while self._chars > self.max_chars and len(self._pieces) > 1:
            self._chars -= len(self._pieces.popleft().text)
        if self._chars > self.max_chars:  # one piece larger than the whole budget: keep its most recent end
            only = self._pieces.popleft()
            self._pieces.append(_Piece(only.seq, only.url, only.text[-self.max_chars :]))
            self._chars = self.max_chars

