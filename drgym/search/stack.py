"""Assemble the search stack an env uses from its options: backend(s), failover, metering, budget, cache, replay.

Order, outermost first::

    EpisodeView (per episode: counts, per-episode budget)
      └ RecordingBackend (record_path)  |  ReplayBackend strict (replay_path: no network at all)
          └ ReplayBackend cache mode (cache_path, TTL)
              └ FailoverBackend (several names)
                  └ MeteredBackend (budget, spend) ← provider backend (page_opener: fetcher + extraction)

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
from drgym.search.registry import shared_backend

__all__ = ["LOCAL_NAMES", "SearchConfig", "build_stack", "close_stacks", "default_meter", "usage_summary"]

LOCAL_NAMES = frozenset({"local"})
"""Backends that need no network: no metering, page opener or cache around them."""

_lock = threading.Lock()
_stacks: dict[str, SearchBackend] = {}
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
    cache_ttl_s: float | None = 7 * 24 * 3600.0
    record_path: str | None = None
    replay_path: str | None = None

    def key(self) -> str:
        search = self.search if isinstance(self.search, (str, tuple)) else f"instance:{id(self.search)}"
        return repr((search, self.corpus, sorted(self.search_kwargs.items()), self.budget_per_episode,
                     self.budget_global, self.cache_path, self.cache_ttl_s, self.record_path, self.replay_path))


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


async def close_stacks() -> None:
    """Close and forget every shared stack (their stores, sessions and servers); the next env builds anew."""
    with _lock:
        stacks = list(_stacks.values())
        _stacks.clear()
    for stack in stacks:
        await stack.aclose()


def _build(config: SearchConfig) -> SearchBackend:
    from drgym.search.replay import RecordingBackend, ReplayBackend

    replay_path = config.replay_path
    if config.search == "replay":  # search="replay", search_kwargs={"path": ...}: the same as replay_path=
        replay_path = replay_path or config.search_kwargs.get("path")
        if replay_path is None:
            raise ConfigError('search="replay" needs the recorded file: search_kwargs={"path": "run.sqlite"}')
    if replay_path is not None:
        if config.record_path is not None:
            raise ConfigError("`replay_path` and `record_path` exclude each other: replay reads what a run recorded")
        return ReplayBackend(replay_path, strict=True)
    if not isinstance(config.search, (str, tuple)):
        stack: SearchBackend = config.search  # a backend instance: wrap it in the requested layers
        names: tuple[str, ...] = ()
    else:
        names = (config.search,) if isinstance(config.search, str) else tuple(config.search)
        if not names:
            raise ConfigError("`search` names no backend")
    if not names:
        pass
    elif len(names) == 1 and names[0] in LOCAL_NAMES:
        options = dict(config.search_kwargs)
        options.setdefault("name", config.corpus or "wiki-local")
        stack: SearchBackend = shared_backend(names[0], **options)
    else:
        stack = _live(names, config)
        if config.cache_path is not None:
            stack = ReplayBackend(
                config.cache_path, strict=False, inner=stack, ttl_s=config.cache_ttl_s, meter=default_meter()
            )
    if config.record_path is not None:
        stack = RecordingBackend(stack, config.record_path)
    return stack


def _live(names: Sequence[str], config: SearchConfig) -> SearchBackend:
    from drgym.search.failover import FailoverBackend
    from drgym.search.metering import Budget, MeteredBackend
    from drgym.search.registry import make_backend
    from drgym.web.opener import PageOpener

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
        backend = make_backend(name, **kwargs)
        if getattr(backend, "page_opener", "absent") is None:
            backend.page_opener = opener  # type: ignore[attr-defined]
        metered.append(MeteredBackend(backend, default_meter(), budget))
    return metered[0] if len(metered) == 1 else FailoverBackend(metered)
