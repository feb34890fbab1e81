"""Run every performance benchmark of ``benchmarks/perf`` one after the other, each printing its table.

Usage::

    python -m benchmarks.perf.all            # every benchmark with --quick (a smoke run, a few minutes)
    python -m benchmarks.perf.all --full     # the full measurements (those quoted in benchmarks/README.md)
    python -m benchmarks.perf.all --only local_search,env_overhead

Benchmarks are found at run time (every module of the package with a ``main(argv)``), so a new script is
picked up without being listed here. One that fails is reported with its error and the others still run;
the exit status is non-zero when any failed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Outcome", "discover", "main", "run_all"]

_PACKAGE = __package__ or "benchmarks.perf"
_SELF = "all"


@dataclass(frozen=True)
class Outcome:
    """How one benchmark went: ``error`` is None on success."""

    name: str
    seconds: float
    error: str | None = None


def discover(package: str = _PACKAGE) -> list[str]:
    """Names of the benchmark modules of ``package`` (sorted; private modules and this runner left out)."""
    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg]
    return sorted(n for n in names if n != _SELF and not n.startswith("_"))


def _call(entry: Callable[..., Any], name: str, argv: list[str]) -> Any:
    """``main(argv)``; a ``main()`` that takes no arguments reads ``sys.argv``, so set that instead."""
    try:
        takes_argv = bool(inspect.signature(entry).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: assume the usual main(argv)
        takes_argv = True
    if takes_argv:
        return entry(list(argv))
    saved = sys.argv
    sys.argv = [f"{_PACKAGE}.{name}", *argv]
    try:
        return entry()
    finally:
        sys.argv = saved


def _run_one(name: str, package: str, argv: list[str]) -> Outcome:
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"{package}.{name}")
        entry: Callable[..., Any] | None = getattr(module, "main", None)
        if not callable(entry):
            raise TypeError(f"{package}.{name} has no main(argv) function")
        status = _call(entry, name, argv)
        if isinstance(status, int) and not isinstance(status, bool) and status != 0:
            raise RuntimeError(f"main() returned exit status {status}")
    except SystemExit as exc:  # argparse and scripts exit; only a non-zero status is a failure
        if exc.code not in (None, 0):
            return Outcome(name, time.perf_counter() - started, f"exited with status {exc.code}")
    except Exception as exc:  # noqa: BLE001  # one broken benchmark must not stop the others
        detail = traceback.format_exc(limit=3)
        return Outcome(name, time.perf_counter() - started, f"{type(exc).__name__}: {exc}\n{detail}")
    return Outcome(name, time.perf_counter() - started)


def run_all(
    names: Sequence[str] | None = None,
    *,
    full: bool = False,
    package: str = _PACKAGE,
    echo: Callable[[str], None] = print,
) -> list[Outcome]:
    """Run the benchmarks ``names`` (default: all discovered) with ``--quick`` unless ``full``.

    Raises:
        ValueError: A name that is not a benchmark of ``package`` (the message lists the valid ones).
    """
    available = discover(package)
    chosen = list(available if names is None else names)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(available)}")
    argv = [] if full else ["--quick"]
    outcomes = []
    for name in chosen:
        echo(f"\n== {name} ({'full' if full else 'quick'}) ==")
        outcome = _run_one(name, package, argv)
        if outcome.error is not None:
            echo(f"FAILED {name} after {outcome.seconds:.1f}s: {outcome.error}")
        outcomes.append(outcome)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 when every benchmark ran, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.perf.all", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--full", action="store_true", help="full measurements instead of --quick smoke runs")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        outcomes = run_all(names, full=args.full)
    except ValueError as exc:
        parser.error(str(exc))
    print("\n| benchmark | seconds | status |")
    print("|---|---|---|")
    for o in outcomes:
        status = "ok" if o.error is None else "FAILED: " + o.error.splitlines()[0]
        print(f"| {o.name} | {o.seconds:.1f} | {status} |")
    return 0 if all(o.error is None for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
