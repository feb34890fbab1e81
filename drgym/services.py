"""``ToolServices``: the one object that owns what envs share (sessions, search stacks, limiters, budgets, loops).

Nothing in drgym is process-wide. Envs share rate limits, the global search budget, the cache and HTTP
sessions only when they are given the same ``ToolServices``::

    with drgym.ToolServices() as shared:
        envs = [gymnasium.make("drgym/WebResearch-v0", search="serper", search_budget_global=1000,
                               cache_path="cache.sqlite", services=shared) for _ in range(8)]
        ...                       # one rate limit, one budget, one cache, one session for all eight
        for env in envs:
            env.close()           # leaves `shared` open: its owner closes it (here: the with block)

An env given none builds its own and closes it in ``env.close()``. The vector-env helpers, the benchmark
runner and the TRL / verl adapters make one and pass it to every env they build.

What it holds, keyed so that equal options share one:

* :meth:`stack`: a search stack per :class:`~drgym.search.stack.SearchConfig` (backend, failover, budget,
  meter, cache / record / replay store);
* :meth:`backend`: a backend per name and options (one BM25 index in memory for every env of a corpus);
* :meth:`limiter`: a token bucket per name (``search:serper``: one quota for every stack of these services);
* :meth:`gateway`: one gateway client per URL and options;
* :attr:`meter`: calls, cache hits and spend of every live provider (:meth:`usage_summary`);
* the event loops the synchronous API (``env.step``) runs on (:meth:`run`).

Threads and loops: one object may be shared by envs on different threads and event loops. HTTP sessions are
kept per event loop, the limiters, budgets and meter are thread-safe, and the sync API runs each thread on a
loop of its own. Close it once every env is done (``close()`` from sync code, ``await aclose()`` on the loop
the async envs ran on, or a ``with`` / ``async with`` block).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from drgym._loop import SyncRunner
from drgym.ratelimit import TokenBucket, _check_rate
from drgym.search.base import SearchBackend
from drgym.search.metering import Meter
from drgym.search.stack import SearchConfig, new_stack

if TYPE_CHECKING:
    from drgym.gateway.client import GatewayBackend

__all__ = ["ToolServices"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ToolServices:
    """What a group of envs shares; pass it as ``services=`` to each (see the module docstring).

    Args:
        prices_per_1k: USD per 1000 calls by provider for the meter's spend estimates (merged over the
            defaults in :data:`drgym.search.metering.DEFAULT_PRICES_PER_1K`).
    """

    def __init__(self, *, prices_per_1k: Mapping[str, float] | None = None) -> None:
        self.meter = Meter(prices_per_1k)
        self._runner = SyncRunner()
        self._lock = threading.RLock()  # held while building: a stack builds its local backend inside
        self._limiters: dict[str, TokenBucket] = {}
        self._backends: dict[tuple[str, str], SearchBackend] = {}
        self._stacks: dict[str, SearchBackend] = {}
        self._gateways: dict[str, GatewayBackend] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # ------------------------------------------------------------------ what is shared

    def limiter(self, name: str, rate: float, burst: float | None = None) -> TokenBucket:
        """The bucket called ``name`` (e.g. ``"search:serper"``): every stack of these services shares it.

        The first call creates it. A later call with other settings reconfigures it (the latest wins: the
        provider's quota is one) and logs it.
        """
        rate, burst = _check_rate(rate, burst)
        with self._lock:
            self._check_open()
            bucket = self._limiters.get(name)
            if bucket is None:
                bucket = self._limiters[name] = TokenBucket(rate, burst)
            elif (bucket.rate, bucket.burst) != (rate, burst):
                logger.info("rate limiter %s reconfigured from %g/s (burst %g) to %g/s (burst %g)",
                            name, bucket.rate, bucket.burst, rate, burst)
                bucket.configure(rate, burst)
            return bucket

    def backend(self, name: str, /, **kwargs: Any) -> SearchBackend:
        """The backend ``name`` built with ``kwargs``, made once (a BM25 index is loaded once)."""
        from drgym.search.registry import make_backend

        key = (name, repr(sorted(kwargs.items())))
        return self._made_once(self._backends, key, lambda: make_backend(name, **kwargs))

    def stack(self, config: SearchConfig) -> SearchBackend:
        """The search stack for ``config``, built once: envs with equal options share its budget and store."""
        key = config.key()
        return self._made_once(self._stacks, key, lambda: new_stack(config, self))

    def gateway(self, url: str, **options: Any) -> GatewayBackend:
        """The client of the ``drgym serve`` gateway at ``url`` with ``options`` (one HTTP session per loop)."""
        from drgym.gateway.client import GatewayBackend

        key = repr((url, sorted(options.items())))
        return self._made_once(self._gateways, key, lambda: GatewayBackend(url, **options))

    def _made_once(self, table: dict[Any, T], key: Any, make: Callable[[], T]) -> T:
        """``table[key]``, made by ``make`` the first time (under the lock: concurrent callers get one)."""
        with self._lock:
            self._check_open()
            value = table.get(key)
            if value is None:
                value = table[key] = make()
            return value

    def usage_summary(self) -> dict[str, Any]:
        """Calls, cache hits, failures and estimated spend per provider, of every stack of these services."""
        return self.meter.summary()

    # ------------------------------------------------------------------ the sync API's loops

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` from synchronous code on this thread's loop of these services (``env.step`` does)."""
        return self._runner.run(coro)

    # ------------------------------------------------------------------ lifetime

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`aclose` began."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this ToolServices is closed; make a new one for new envs")

    def _take_all(self) -> list[Any]:
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            owned: list[Any] = [*self._stacks.values(), *self._backends.values(), *self._gateways.values()]
            self._stacks.clear()
            self._backends.clear()
            self._gateways.clear()
        unique: dict[int, Any] = {}
        for item in owned:
            unique.setdefault(id(item), item)
        return list(unique.values())

    async def _close_all(self, owned: list[Any]) -> None:
        outcomes = await asyncio.gather(*(item.aclose() for item in owned), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]

    async def aclose(self) -> None:
        """Close every stack (flushing its store), backend, session and loop; call on the envs' event loop."""
        owned = self._take_all()
        try:
            await self._close_all(owned)
        finally:
            self._runner.close()

    def close(self) -> None:
        """Close from synchronous code: now, or (inside a running loop) as soon as that loop gets to it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(self.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        owned = self._take_all()
        try:
            if owned:
                self._runner.run(self._close_all(owned))
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "ToolServices holds sessions, stores and event loops and cannot be pickled; make one per process "
            "(for many processes and nodes, share one `drgym serve` gateway instead)"
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._stacks)} stacks, {len(self._limiters)} limiters"
        return f"ToolServices({state})"
