"""Assemble the search stack an env uses from its options: backend(s), failover, metering, budget, cache, replay.

Order, outermost first::

    EpisodeView (per episode: its Episode, i.e. record id, counts, per-episode budget, passed to every layer)
      └ RecordingBackend (cache_mode="record")  |  ReplayBackend strict (cache_mode="replay": no network at all)
          └ ReplayBackend cache mode (cache_mode="read-write": TTL, size cap; live backends only)
              └ FailoverBackend (several names)
                  └ MeteredBackend (budget, spend) ← provider backend (page_opener: fetcher + extraction)

One SQLite file and one mode (:data:`CACHE_MODES`); the older ``record_path``/``replay_path`` options are
aliases (:func:`resolve_cache_mode`). Each call carries its episode's record id
(:class:`~drgym.search.episode.Episode`), so a recording keeps which episode saw what.

A stack is built for a :class:`~drgym.services.ToolServices`, which keeps one per configuration: every env
given the same services charges the same global budget, takes tokens from the same rate limiters and reuses
one HTTP session per provider. Envs given different services share nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drgym.errors import ConfigError
from drgym.search.base import SearchBackend
from drgym.search.cache import DEFAULT_CACHE_TTL_S, DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from drgym.services import ToolServices

__all__ = [
    "CACHE_MODES",
    "LOCAL_NAMES",
    "SearchConfig",
    "new_stack",
    "resolve_cache_mode",
]

CACHE_MODES = ("off", "read-write", "record", "replay")
"""``off``: no store; ``read-write``: a TTL cache of live answers; ``record``: keep everything each episode saw
(pinned, keyed to the episode); ``replay``: answer only from the store, a miss is an error, never a live call."""

LOCAL_NAMES = frozenset({"local"})
"""Backends that need no network: no metering, page opener or cache around them."""

@dataclass(frozen=True)
class SearchConfig:
    """Everything that decides the search stack (its :meth:`key` is how a ``ToolServices`` shares one)."""

    search: str | tuple[str, ...] | SearchBackend
    corpus: str | None = None
    search_kwargs: Mapping[str, Any] = field(default_factory=dict)
    budget_per_episode: int | None = None
    budget_global: int | None = None
    cache_path: str | None = None
    cache_ttl_s: float | None = DEFAULT_CACHE_TTL_S
    record_path: str | None = None
    replay_path: str | None = None
    cache_mode: str | None = None
    """One of :data:`CACHE_MODES`; ``None`` infers it from the paths (see :func:`resolve_cache_mode`)."""
    cache_max_bytes: int | None = DEFAULT_MAX_BYTES
    """Size cap of a read-write cache (least recently used entries go first); recordings are never evicted."""
    cache_max_entries: int | None = None

    def __post_init__(self) -> None:
        resolve_cache_mode(self.cache_mode, self.cache_path, self.record_path, self.replay_path)
        if self.cache_ttl_s is not None and not self.cache_ttl_s > 0:
            raise ConfigError(f"`cache_ttl_s` must be > 0 or None, got {self.cache_ttl_s!r}")
        for label, cap in (("cache_max_bytes", self.cache_max_bytes), ("cache_max_entries", self.cache_max_entries)):
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ConfigError(f"`{label}` must be a positive integer or None, got {cap!r}")

    def key(self) -> str:
        search = self.search if isinstance(self.search, (str, tuple)) else f"instance:{id(self.search)}"
        store = resolve_cache_mode(self.cache_mode, self.cache_path, self.record_path, self.replay_path)
        return repr((search, self.corpus, sorted(self.search_kwargs.items()), self.budget_per_episode,
                     self.budget_global, store, self.cache_ttl_s, self.cache_max_bytes, self.cache_max_entries))


def resolve_cache_mode(
    cache_mode: str | None,
    cache_path: str | None = None,
    record_path: str | None = None,
    replay_path: str | None = None,
) -> tuple[str, str | None, str | None]:
    """The store mode and file from the options; returns ``(mode, path, cache_under_recording)``.

    ``record_path=P`` is ``cache_mode="record", cache_path=P``; ``replay_path=P`` is ``cache_mode="replay",
    cache_path=P``; ``cache_path`` alone is ``"read-write"``; nothing is ``"off"``. The older pairing of
    ``record_path`` with a *different* ``cache_path`` (record over a read-write cache) is kept: the third value
    is then the cache file.

    Raises:
        ConfigError: an unknown mode (the message lists the modes), a mode without a file, or options that
            contradict each other.
    """
    if cache_mode is None:
        if replay_path is not None:
            if record_path is not None:
                raise ConfigError(
                    "`replay_path` and `record_path` exclude each other: replay reads what a run recorded"
                )
            if cache_path is not None and cache_path != replay_path:
                raise ConfigError(
                    "`replay_path` answers only from the recording; drop `cache_path` (or use the same file)"
                )
            return "replay", replay_path, None
        if record_path is not None:
            return "record", record_path, None if cache_path in (None, record_path) else cache_path
        return ("read-write", cache_path, None) if cache_path is not None else ("off", None, None)
    if cache_mode not in CACHE_MODES:
        raise ConfigError(
            f"`cache_mode` must be one of {', '.join(map(repr, CACHE_MODES))}, got {cache_mode!r}"
        )
    for alias, mode in (("record_path", "record"), ("replay_path", "replay")):
        path = record_path if mode == "record" else replay_path
        if path is not None and cache_mode != mode:
            raise ConfigError(f"`{alias}` means cache_mode={mode!r}, but cache_mode={cache_mode!r} was given")
    alias_path = record_path if cache_mode == "record" else replay_path if cache_mode == "replay" else None
    if cache_mode == "off":
        if cache_path is not None:
            raise ConfigError("cache_mode='off' but `cache_path` is set; drop the path or choose a mode")
        return "off", None, None
    paths = {p for p in (cache_path, alias_path) if p is not None}
    if not paths:
        raise ConfigError(f"cache_mode={cache_mode!r} needs `cache_path`, the SQLite file to use")
    if len(paths) > 1:
        raise ConfigError(f"`cache_path` and `{'record' if cache_mode == 'record' else 'replay'}_path` name "
                          f"different files ({', '.join(sorted(paths))}); give one")
    return cache_mode, paths.pop(), None


def new_stack(
    config: SearchConfig, services: ToolServices, *, limiter: Any = None, budget: Any = None
) -> SearchBackend:
    """A new stack for ``config``, built with ``services``' meter, rate limiters and shared local indexes.

    The caller owns it (close it with ``aclose``); :meth:`ToolServices.stack` is the shared one per config.

    Args:
        services: Where the meter, the named rate limiters (``search:<provider>``) and the local BM25 indexes
            come from.
        limiter: A ``TokenBucket`` every live HTTP provider of the stack takes one token from per request
            (retries included), instead of the services' bucket per provider.
        budget: The ``Budget`` its live providers charge (default: one made from the config's limits).
    """
    return _build(config, services, limiter=limiter, budget=budget)


def _build(config: SearchConfig, services: ToolServices, *, limiter: Any = None, budget: Any = None) -> SearchBackend:
    from drgym.search.cache import SearchStore
    from drgym.search.replay import RecordingBackend, ReplayBackend

    mode, path, under = resolve_cache_mode(
        config.cache_mode, config.cache_path, config.record_path, config.replay_path
    )
    if config.search == "replay":  # search="replay", search_kwargs={"path": ...}: the same as replay_path=
        if mode == "off":
            mode, path = "replay", config.search_kwargs.get("path")
        if mode != "replay" or path is None:
            raise ConfigError('search="replay" needs the recorded file: search_kwargs={"path": "run.sqlite"}')
    if mode == "replay":
        assert path is not None
        store = SearchStore(path, create=False)
        recorded = store.backends_sync()
        wanted = _stack_name(config.search)
        return ReplayBackend(store, strict=True, name=wanted if wanted in recorded else None, close_store=True)
    if not isinstance(config.search, (str, tuple)):
        stack: SearchBackend = config.search  # a backend instance: wrap it in the requested layers
        names: tuple[str, ...] = ()
    else:
        names = (config.search,) if isinstance(config.search, str) else tuple(config.search)
        if not names:
            raise ConfigError("`search` names no backend")
    if not names:
        live = True
    elif len(names) == 1 and names[0] in LOCAL_NAMES:
        options = dict(config.search_kwargs)
        options.setdefault("name", config.corpus or "wiki-local")
        stack = services.backend(names[0], **options)
        live = False
    else:
        stack = _live(names, config, services, limiter, budget)
        live = True
    cache_path = path if mode == "read-write" else under
    if live and cache_path is not None:
        store = SearchStore(cache_path, max_bytes=config.cache_max_bytes, max_entries=config.cache_max_entries)
        stack = ReplayBackend(
            store, strict=False, inner=stack, ttl_s=config.cache_ttl_s, meter=services.meter,
            close_store=True,
        )
    if mode == "record":
        assert path is not None
        stack = RecordingBackend(stack, SearchStore(path), ttl_s=config.cache_ttl_s, close_store=True)
    return stack


def _stack_name(search: Any) -> str | None:
    if isinstance(search, str):
        return search
    if isinstance(search, tuple):
        return "+".join(search)
    return search.name  # a SearchBackend instance


def _live(
    names: Sequence[str], config: SearchConfig, services: ToolServices, limiter: Any, budget: Any = None
) -> SearchBackend:
    from drgym.search._http import HttpSearchBackend
    from drgym.search.failover import FailoverBackend
    from drgym.search.metering import Budget, MeteredBackend
    from drgym.search.registry import backend_factory
    from drgym.web.opener import PageOpener

    if budget is None:
        budget = Budget(per_episode=config.budget_per_episode, global_=config.budget_global)
    opener = PageOpener()
    metered = []
    for name in names:
        if name in LOCAL_NAMES:
            raise ConfigError("`local` cannot be chained with live backends; use it alone")
        # a chain takes per-backend options: search_kwargs={"serper": {...}, "brave": {...}}
        kwargs = config.search_kwargs.get(name, {}) if len(names) > 1 else config.search_kwargs
        kwargs = dict(kwargs)
        if name == "miniweb" and config.corpus is not None:
            kwargs.setdefault("corpus", config.corpus)
        factory = backend_factory(name)
        if isinstance(factory, type) and issubclass(factory, HttpSearchBackend) and "limiter" not in kwargs:
            # one bucket per provider for every stack of these services (or the caller's one for all providers)
            rps, burst = kwargs.pop("rps", None), kwargs.pop("burst", None)
            kwargs["limiter"] = limiter or services.limiter(
                f"search:{name}", factory.default_rps if rps is None else rps, burst
            )
        backend = factory(**kwargs)
        if isinstance(backend, HttpSearchBackend) and backend.page_opener is None:
            backend.page_opener = opener
        metered.append(MeteredBackend(backend, services.meter, budget))
    return metered[0] if len(metered) == 1 else FailoverBackend(metered)
