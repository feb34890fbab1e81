"""The child process behind :class:`drgym.web.isolation.IsolatedPool`: runs one call at a time, forever.

Started as ``python PATH/_isolation_worker.py MODULE...`` (a script, so the ``drgym`` package is not imported
first). It preloads the
modules named on the command line, then reads requests from stdin and writes replies to a private copy of
stdout (file descriptor 1 is pointed at stderr, so a library that prints cannot corrupt the protocol).
A message is a 4-byte big-endian length and a pickle: a request ``(func, args, kwargs)``, a reply
``(True, value)`` or ``(False, exception)``. It exits at end of input, or when its parent process is gone
(a watchdog thread checks every half second, so a worker never outlives the program that started it, even
mid-parse).
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys
import threading
import time
import types
from pathlib import Path
from typing import BinaryIO

__all__ = ["main", "read_message", "write_message"]

_HEADER = struct.Struct("!I")


def read_message(stream: BinaryIO) -> bytes | None:
    """One framed message from ``stream``; None at end of input."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_message(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _bare_packages() -> None:
    """Make ``drgym`` and ``drgym.web`` importable without running their ``__init__``.

    Those import gymnasium and aiohttp (about a second of start-up, more on a loaded machine) that a worker
    never uses; a worker is started again after every page it had to be stopped on, so its start-up counts.
    Submodules (``drgym.web.extract``, ``drgym.errors``...) import as usual.
    """
    web = Path(__file__).resolve().parent
    for name, folder in (("drgym", web.parent), ("drgym.web", web)):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package


def _limit_memory() -> None:
    limit = int(os.environ.get("DRGYM_WORKER_MAX_BYTES", "0") or 0)
    if limit <= 0:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not on this platform, or above the hard limit
        pass


def _reply(func: object, args: tuple, kwargs: dict) -> bytes:
    try:
        value = func(*args, **kwargs)  # type: ignore[operator]
        return pickle.dumps((True, value), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001  # every failure goes back to the caller
        try:
            return pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001  # an exception that cannot be pickled: send its text
            return pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def main() -> None:
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # run as a script: its folder's modules (fetch, pdf...) must not shadow others
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    _limit_memory()
    _bare_packages()
    for name in sys.argv[1:]:
        importlib.import_module(name)
    write_message(replies, b"ready")
    while True:
        data = read_message(requests)
        if data is None:
            return
        try:
            func, args, kwargs = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001
            reply = pickle.dumps((False, RuntimeError(f"unreadable request: {exc!r}")))
        else:
            reply = _reply(func, args, kwargs)
        del data
        write_message(replies, reply)


if __name__ == "__main__":
    main()
