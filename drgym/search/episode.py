"""Who a search call is for: an :class:`Episode` passed down the search stack with every call.

The layers of the stack (budget and metering, the cache, record and replay, failover) take the episode as an
argument, ``search(query, k, episode=ep)``, and hand it to the layer below; providers (Serper, BM25, ...) never
see it. So per-episode counts and budgets and record-mode keys need no context variables and no probing of
layers: a gateway maps the identity each request carries onto the same argument.

An :class:`EpisodeView` binds one episode to a stack, so code written against the plain
:class:`~drgym.search.base.SearchBackend` interface (the browser, an agent's retriever) carries the identity
without knowing about it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from drgym.document import Document
from drgym.search.base import Result, SearchBackend

if TYPE_CHECKING:
    from drgym.search.cache import SearchStore

__all__ = ["Episode", "EpisodeUsage", "EpisodeView", "LimitedUsage", "SearchLayer", "open_in", "search_in"]


@dataclass
class EpisodeUsage:
    """Search usage of one episode (or of a view's lifetime)."""

    calls: int = 0
    """Provider calls made (failed ones included: they count against the budget)."""
    failures: int = 0
    cache_hits: int = 0
    est_spend_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for ``info``."""
        return asdict(self)

    def call_limit(self) -> int | None:
        """A per-episode cap this episode carries itself (a gateway request names one), else ``None``."""
        return None


@dataclass
class LimitedUsage(EpisodeUsage):
    """The usage of an episode that states its own per-episode cap (checked with the budget's own)."""

    limit: int | None = None

    def call_limit(self) -> int | None:
        return self.limit


@dataclass
class Episode:
    """The identity and counters of one episode, given to every layer of the search stack per call.

    Attributes:
        record_id: What record mode links stored answers to (the dataset record's id); ``None``: unlinked.
        usage: This episode's counts and its own per-episode cap, updated by the metering layer.
    """

    record_id: str | None = None
    usage: EpisodeUsage = field(default_factory=EpisodeUsage)


class SearchLayer:
    """Base of the stack's own layers: their ``search``/``open`` take the :class:`Episode` a call is for.

    A layer passes the episode on with :func:`search_in` / :func:`open_in`, which drop it for a provider. It
    names what it calls with :meth:`below` and the stores it reads or writes with :meth:`own_stores`, so
    :meth:`stores` finds every store of a stack without looking inside the layers.
    """

    name: str

    async def search(self, query: str, k: int = 10, *, episode: Episode | None = None) -> list[Result]:
        raise NotImplementedError

    async def open(self, url: str, *, episode: Episode | None = None) -> Document:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def below(self) -> list[SearchBackend]:
        """The backends this layer calls (none for a store-only replay)."""
        return []

    def own_stores(self) -> list[SearchStore]:
        """The stores this layer itself reads or writes."""
        return []

    def stores(self) -> list[SearchStore]:
        """Every store in this layer and below it, outermost first."""
        found = list(self.own_stores())
        for inner in self.below():
            if isinstance(inner, SearchLayer):
                found.extend(inner.stores())
        return found


async def search_in(backend: SearchBackend, query: str, k: int, episode: Episode | None) -> list[Result]:
    """``backend.search`` for ``episode``: a layer gets the episode, a provider does not need it."""
    if isinstance(backend, SearchLayer):
        return await backend.search(query, k, episode=episode)
    return await backend.search(query, k)


async def open_in(backend: SearchBackend, url: str, episode: Episode | None) -> Document:
    """``backend.open`` for ``episode`` (see :func:`search_in`)."""
    if isinstance(backend, SearchLayer):
        return await backend.open(url, episode=episode)
    return await backend.open(url)


class EpisodeView:
    """One episode's handle on a shared search stack: every call carries the episode.

    The view does not own the stack; closing it closes nothing.

    Args:
        backend: The stack.
        episode: The episode (default: a new, unlinked one).
    """

    def __init__(self, backend: SearchBackend, episode: Episode | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.episode = episode if episode is not None else Episode()

    @property
    def usage(self) -> EpisodeUsage:
        """This episode's counts."""
        return self.episode.usage

    async def search(self, query: str, k: int = 10) -> list[Result]:
        """Search with this episode's counts, budget and record key in effect."""
        return await search_in(self.backend, query, k, self.episode)

    async def open(self, url: str) -> Document:
        """Read a page with this episode's counts and record key in effect."""
        return await open_in(self.backend, url, self.episode)

    async def aclose(self) -> None:
        """Nothing to release: the shared stack outlives the episode."""
