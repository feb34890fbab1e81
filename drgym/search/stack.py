"""Assemble the search stack an env uses from its options: backend(s), failover, metering, budget, cache, replay.

Order, outermost first::

    EpisodeView (per episode: counts, per-episode budget)
      └ RecordingBackend (cache_mode="record")  |  ReplayBackend strict (cache_mode="replay": no network at all)
          └ ReplayBackend cache mode (cache_mode="read-write": TTL, size cap; live backends only)
              └ FailoverBackend (several names)
                  └ MeteredBackend (budget, spend) ← provider backend (page_opener: fetcher + extraction)

One SQLite file and one mode (:data:`CACHE_MODES`); the older ``record_path``/``replay_path`` options are
aliases (:func:`resolve_cache_mode`). The env marks each step with its record id
(:func:`~drgym.search.replay.recording_episode`), so a recording keeps which episode saw what.

Stacks are shared per process and per configuration, so every env copy charges the same global budget and
reuses one HTTP session per provider.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drgym.errors import ConfigError
from drgym.search.base import SearchBackend
from drgym.search.cache import DEFAULT_CACHE_TTL_S, DEFAULT_MAX_BYTES
from drgym.search.registry import shared_backend

__all__ = [
    "CACHE_MODES",
    "LOCAL_NAMES",
    "SearchConfig",
    "acquire_stack",
    "build_stack",
    "close_idle_sessions",
    "close_sessions",
    "close_stacks",
    "default_meter",
    "new_stack",
    "release_stack",
    "resolve_cache_mode",
    "usage_summary",
]

CACHE_MODES = ("off", "read-write", "record", "replay")
"""``off``: no store; ``read-write``: a TTL cache of live answers; ``record``: keep everything each episode saw
(pinned, keyed to the episode); ``replay``: answer only from the store, a miss is an error, never a live call."""

LOCAL_NAMES = frozenset({"local"})
"""Backends that need no network: no metering, page opener or cache around them."""

_lock = threading.Lock()
_stacks: dict[str, SearchBackend] = {}
_users: dict[str, int] = {}  # open envs per shared stack: one nobody uses may drop its network sessions
_meter: Any = None


def default_meter() -> Any:
    """The process-wide ``Meter`` that counts calls, cache hits and spend of every live provider."""
    global _meter
    with _lock:
        if _meter is None:
            from drgym.search.metering import Meter

            _meter = Meter()
        return _meter


def usage_summary() -> dict[str, Any]:
    """Calls, cache hits, failures and estimated spend per provider, for this process so far."""
    return default_meter().summary()


@dataclass(frozen=True)
class SearchConfig:
    """Everything that decides the search stack (hashable into the per-process cache key)."""

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


def build_stack(config: SearchConfig) -> SearchBackend:
    """The shared stack for ``config`` (built once per process)."""
    key = config.key()
    with _lock:
        stack = _stacks.get(key)
    if stack is None:
        stack = _build(config)
        with _lock:
            stack = _stacks.setdefault(key, stack)
    return stack


def acquire_stack(config: SearchConfig) -> SearchBackend:
    """:func:`build_stack`, counted as one more user (an env) until :func:`release_stack`."""
    stack = build_stack(config)
    with _lock:
        _users[config.key()] = _users.get(config.key(), 0) + 1
    return stack


def release_stack(stack: SearchBackend) -> None:
    """One user of a shared stack is done with it (``env.close()``); the stack itself stays for others."""
    with _lock:
        for key, shared in _stacks.items():
            if shared is stack and _users.get(key, 0) > 0:
                _users[key] -= 1
                return


async def close_idle_sessions() -> None:
    """Close the network sessions and local servers of shared stacks no open env uses (stores stay open).

    ``arun_episodes`` calls this when its batch is over, so the sessions its envs opened on the caller's
    loop are closed before that loop ends; a later env opens new ones.
    """
    with _lock:
        idle = [stack for key, stack in _stacks.items() if _users.get(key) == 0]
    for stack in idle:
        await close_sessions(stack)


async def close_sessions(backend: SearchBackend) -> None:
    """Close what ``backend``'s layers hold open on the network (sessions, sites); each stays usable."""
    from drgym.miniweb.backend import MiniWebBackend
    from drgym.search._http import HttpSearchBackend
    from drgym.search.failover import FailoverBackend
    from drgym.search.metering import MeteredBackend
    from drgym.search.replay import RecordingBackend, ReplayBackend
    from drgym.web.opener import PageOpener

    if isinstance(backend, FailoverBackend):
        for member in backend.backends:
            await close_sessions(member)
    elif isinstance(backend, (MeteredBackend, RecordingBackend)):
        await close_sessions(backend.inner)
    elif isinstance(backend, ReplayBackend):
        if backend.inner is not None:
            await close_sessions(backend.inner)
    elif isinstance(backend, HttpSearchBackend):
        await backend.aclose()
        if isinstance(backend.page_opener, PageOpener):
            await backend.page_opener.aclose()
    elif isinstance(backend, MiniWebBackend):
        await backend.aclose()


async def close_stacks() -> None:
    """Close and forget every shared stack (their stores, sessions and servers); the next env builds anew."""
    with _lock:
        stacks = list(_stacks.values())
        _stacks.clear()
        _users.clear()
    for stack in stacks:
        await stack.aclose()


def new_stack(
    config: SearchConfig, *, meter: Any = None, limiter: Any = None, budget: Any = None
) -> SearchBackend:
    """A stack for ``config`` owned by the caller (not shared, not remembered): close it with ``aclose``.

    Args:
        meter: The ``Meter`` that counts its calls, cache hits and spend (default: the process-wide one).
        limiter: A ``TokenBucket`` every live HTTP provider of the stack takes one token from per request
            (retries included), instead of each provider's own process-wide bucket.
        budget: The ``Budget`` its live providers charge (default: one made from the config's limits).
    """
    return _build(config, meter=meter, limiter=limiter, budget=budget)


def _build(config: SearchConfig, *, meter: Any = None, limiter: Any = None, budget: Any = None) -> SearchBackend:
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
        stack = shared_backend(names[0], **options)
        live = False
    else:
        stack = _live(names, config, meter or default_meter(), limiter, budget)
        live = True
    cache_path = path if mode == "read-write" else under
    if live and cache_path is not None:
        store = SearchStore(cache_path, max_bytes=config.cache_max_bytes, max_entries=config.cache_max_entries)
        stack = ReplayBackend(
            store, strict=False, inner=stack, ttl_s=config.cache_ttl_s, meter=meter or default_meter(),
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
    return getattr(search, "name", None)


def _live(
    names: Sequence[str], config: SearchConfig, meter: Any, limiter: Any, budget: Any = None
) -> SearchBackend:
    from drgym.search._http import HttpSearchBackend
    from drgym.search.failover import FailoverBackend
    from drgym.search.metering import Budget, MeteredBackend
    from drgym.search.registry import make_backend
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
        if limiter is not None and _takes_limiter(name):
            kwargs.setdefault("limiter", limiter)
        backend = make_backend(name, **kwargs)
        if isinstance(backend, HttpSearchBackend) and backend.page_opener is None:
            backend.page_opener = opener
        metered.append(MeteredBackend(backend, meter, budget))
    return metered[0] if len(metered) == 1 else FailoverBackend(metered)


def _takes_limiter(name: str) -> bool:
    """Whether the named backend is an HTTP provider (it accepts ``limiter=``)."""
    from drgym.search.registry import BACKENDS

    return name in BACKENDS and name not in LOCAL_NAMES and name != "miniweb"
