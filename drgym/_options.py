"""Checks of ``WebResearchEnv``'s options, run at ``make`` so a bad value fails there, naming the option.

Each check raises :class:`~drgym.errors.ConfigError` with the option's name, what it expected and what came
(with a "did you mean" suggestion for names); none of them builds a backend, opens a file or touches the
network, so an unknown name in a failover chain is reported before a known member complains about its key.
Checks that need the data (dataset and data-source names) stay with the loaders, which report them the same
way.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from drgym.errors import ConfigError
from drgym.search.base import SearchBackend

__all__ = [
    "check_choice",
    "check_env_options",
    "check_search",
    "parse_today",
]

_CORPUS_BACKENDS = ("local", "miniweb")
"""Backends whose answers come from a named corpus (the ``corpus`` option and their ``search_kwargs``)."""
_REPLAY = "replay"
"""Not a backend: ``search="replay"`` replays a recording (``search_kwargs={"path": ...}``)."""


def _suggest(value: object, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(valid), n=1)
    return f" Did you mean `{close[0]}`?" if close else ""


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}.{_suggest(value, choices)}"
        )


def _positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise ConfigError(f"`{name}` must be {allowed}, got {value!r}")


def _positive_seconds(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"`{name}` must be a finite number of seconds > 0 (an int or float), got {value!r}")


def _path(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"`{name}` must be a file path (str or os.PathLike) or None, got {value!r}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"`{name}` must name a file, got an empty string")


def parse_today(value: Any) -> _dt.date | None:
    """The ``today`` option as a date: a ``datetime.date`` or an ISO date string (``"2025-04-03"``), or None."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        try:
            return _dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(
        f"`today` must be a datetime.date or an ISO date string like '2025-04-03' (or None for today), "
        f"got {value!r}"
    )


def _names(search: Any) -> tuple[str, ...]:
    if isinstance(search, str):
        return (search,)
    if isinstance(search, Sequence) and search and all(isinstance(n, str) for n in search):
        return tuple(search)
    raise ConfigError(
        f"`search` must be a backend name, a non-empty list of names (a failover chain) or a SearchBackend, "
        f"got {search!r:.80}"
    )


def _check_corpus(label: str, value: Any, corpora: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in corpora:
        raise ConfigError(
            f"`{label}` must be a corpus name ({', '.join(corpora)}), got {value!r}.{_suggest(value, corpora)}"
        )


def check_search(
    search: Any, corpus: Any, search_kwargs: Any, *, backends: Sequence[str], corpora: Sequence[str]
) -> None:
    """``search``, ``corpus`` and ``search_kwargs`` together: known names, the right shapes, known corpora.

    Args:
        backends: The backend names :func:`~drgym.search.registry.make_backend` knows.
        corpora: The corpus names :func:`~drgym.data.load_corpus` knows.
    """
    if corpus is not None:
        _check_corpus("corpus", corpus, corpora)
    if search_kwargs is not None and not isinstance(search_kwargs, Mapping):
        raise ConfigError(
            f"`search_kwargs` must be a dict of backend arguments or None, got {search_kwargs!r:.80}"
        )
    kwargs = dict(search_kwargs or {})
    bad_keys = [k for k in kwargs if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"`search_kwargs` keys must be argument names (str), got {bad_keys[0]!r}")
    if isinstance(search, SearchBackend):
        return
    if isinstance(search, str) and search.startswith("gateway:"):
        return  # the gateway client checks its URL and options (drgym.gateway.client.GatewayBackend)
    names = _names(search)
    valid = sorted({*backends, _REPLAY})
    for name in names:
        if name not in valid or (name == _REPLAY and len(names) > 1):
            raise ConfigError(
                f"`search` names an unknown backend `{name}`; valid backends: {', '.join(backends)}."
                f"{_suggest(name, valid)}"
            )
    if len(names) > 1:
        _check_chain_kwargs(names, kwargs)
        return
    name = names[0]
    if name == "miniweb" and "corpus" in kwargs:
        _check_corpus("search_kwargs['corpus']", kwargs["corpus"], corpora)
    if name == "local" and "name" in kwargs:
        _check_corpus("search_kwargs['name']", kwargs["name"], corpora)


def _check_chain_kwargs(names: Sequence[str], kwargs: Mapping[str, Any]) -> None:
    """A chain's ``search_kwargs`` is ``{member name: {argument: value}}``."""
    if len(set(names)) != len(names):
        raise ConfigError(f"`search` names a backend twice in the chain {list(names)}")
    for key, value in kwargs.items():
        if key not in names:
            raise ConfigError(
                f"`search_kwargs` of the chain {list(names)} is keyed by member name; `{key}` is none of "
                f"them.{_suggest(key, names)} Write search_kwargs={{'{names[0]}': {{...}}, ...}}"
            )
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"`search_kwargs['{key}']` must be a dict of that backend's arguments, got {value!r:.80}"
            )


def check_env_options(
    *,
    dataset: Any,
    data_source: Any,
    limit: Any,
    search: Any,
    corpus: Any,
    search_kwargs: Any,
    search_budget_per_episode: Any,
    search_budget_global: Any,
    paths: Mapping[str, Any],
    cache_mode: Any,
    sizes: Mapping[str, Any],
    browse_time_budget_s: Any,
    browse_only_seen_urls: Any,
    backends: Sequence[str],
    corpora: Sequence[str],
) -> None:
    """Every option of ``WebResearchEnv`` that can be checked without loading data or building a backend.

    Args:
        paths: ``{option: value}`` of the file options (``cache_path``, ``record_path``, ``replay_path``).
        sizes: ``{option: value}`` of the positive-integer options (``max_turns``, ...).
        backends: Known backend names; corpora: known corpus names.
    """
    if not isinstance(dataset, (str, Iterable)) or isinstance(dataset, (bytes, Mapping)):
        raise ConfigError(
            f"`dataset` must be a dataset name or a list of QARecord / {{'question', 'answers'}} dicts, "
            f"got {dataset!r:.80}"
        )
    if isinstance(dataset, str) and not dataset.strip():
        raise ConfigError(
            "`dataset` must name a dataset (see drgym.data.list_datasets()), got an empty string"
        )
    if data_source is not None and not (
        isinstance(data_source, str)
        or (isinstance(data_source, Sequence) and all(isinstance(s, str) for s in data_source))
    ):
        raise ConfigError(
            f"`data_source` must be a source name, a list of names or None, got {data_source!r:.80}"
        )
    _positive_int("limit", limit, optional=True)
    check_search(search, corpus, search_kwargs, backends=backends, corpora=corpora)
    _positive_int("search_budget_per_episode", search_budget_per_episode, optional=True)
    _positive_int("search_budget_global", search_budget_global, optional=True)
    for name, value in paths.items():
        _path(name, value)
    if cache_mode is not None and not isinstance(cache_mode, str):
        raise ConfigError(f"`cache_mode` must be a mode name or None, got {cache_mode!r}")
    for name, value in sizes.items():
        _positive_int(name, value)
    _positive_seconds("browse_time_budget_s", browse_time_budget_s)
    if not isinstance(browse_only_seen_urls, bool):
        raise ConfigError(f"`browse_only_seen_urls` must be True or False, got {browse_only_seen_urls!r}")

