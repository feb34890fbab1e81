"""``drgym._listen.listen``: the servers' socket, and a clear error when the port is taken."""

from __future__ import annotations

import re
import socket

import pytest

from drgym._listen import listen
from drgym.errors import BackendError


def test_listens_on_a_free_port_without_blocking() -> None:
    sock = listen("127.0.0.1", 0, 8, command="drgym serve")
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
        assert sock.getblocking() is False
    finally:
        sock.close()


def test_a_taken_port_is_an_error_naming_the_command() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(BackendError, match=re.escape(f"miniweb serve: cannot listen on 127.0.0.1:{port}:")):
            listen("127.0.0.1", port, 8, command="miniweb serve")
    finally:
        taken.close()
