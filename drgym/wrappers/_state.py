"""What the discrete wrapper remembers of one episode, updated from each observation the env returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from drgym.wrappers._candidates import SpanTable, content_words
from drgym.wrappers._parse import SearchHit, parse_pages, parse_search, unwrap

__all__ = ["EpisodeState", "span_is_title"]


@dataclass
class EpisodeState:
    """The episode as seen through observations: results, pages read, candidate spans, counters.

    Attributes:
        question: The question of the episode.
        spans: Candidate answer spans from every snippet and page seen (each URL's text counted once).
        results: The latest search's results, in rank order (what the browse actions point at).
        read_urls: URLs browsed successfully.
        searched: Queries already searched (lowercased).
        turn: Turns played.
        searches: Search calls that returned results text.
        pages_read: Pages read successfully.
        last_error: Whether the latest observation reported an error.
        titles: Result titles seen, lowercased, without a trailing parenthesis ("Kiss and Tell (film)").
    """

    question: str
    spans: SpanTable = field(init=False)
    question_words: frozenset[str] = field(init=False)
    results: list[SearchHit] = field(default_factory=list)
    read_urls: set[str] = field(default_factory=set)
    searched: set[str] = field(default_factory=set)
    turn: int = 0
    searches: int = 0
    pages_read: int = 0
    last_error: bool = False
    titles: set[str] = field(default_factory=set)
    _ranks: dict[str, int] = field(default_factory=dict)
    _snippet_urls: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.spans = SpanTable(self.question)
        self.question_words = content_words(self.question)

    def absorb(self, kind: str, detail: str, observation: str) -> None:
        """Update from the observation that answered an action of ``kind`` (``search``/``browse``/``answer``)."""
        self.turn += 1
        text = unwrap(observation)
        self.last_error = text.startswith("Error:")
        if kind == "search":
            self.searched.add(detail.lower())
            hits = parse_search(text)
            if hits or not self.last_error:
                self.searches += 1
                self.results = hits
            for rank, hit in enumerate(hits):
                self.titles.add(_bare_title(hit.title))
                self._ranks[hit.url] = min(rank, self._ranks.get(hit.url, rank))
                if hit.url not in self._snippet_urls:
                    self._snippet_urls.add(hit.url)
                    self.spans.add(f"{hit.title}. {hit.snippet}", from_page=False, rank=rank)
        elif kind == "browse":
            for page in parse_pages(text):
                if page.ok and page.url not in self.read_urls:
                    self.read_urls.add(page.url)
                    self.pages_read += 1
                    self.spans.add(page.notes, from_page=True, rank=self._ranks.get(page.url))

    def overlap(self, text: str) -> float:
        """Fraction of the question's content words that ``text`` contains."""
        if not self.question_words:
            return 0.0
        return len(self.question_words & content_words(text)) / len(self.question_words)


def _bare_title(title: str) -> str:
    return title.split(" (", 1)[0].strip().lower()


def span_is_title(state: EpisodeState, span: str) -> bool:
    """Whether a candidate span names a page that a search returned (an entity with its own page)."""
    return span.lower() in state.titles
