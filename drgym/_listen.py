"""The listening socket of drgym's own servers (``drgym serve``, ``drgym miniweb serve``)."""

from __future__ import annotations

import socket

from drgym.errors import BackendError

__all__ = ["listen"]


def listen(host: str, port: int, backlog: int, *, command: str) -> socket.socket:
    """A non-blocking socket listening on ``host:port`` (IPv6 when ``host`` has a colon).

    Bound before the server starts so that a busy port or a bad address is a clear :class:`BackendError`
    naming ``command``, not a traceback from inside the event loop.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BackendError(f"{command}: cannot listen on {host}:{port}: {exc}") from None
    return sock
