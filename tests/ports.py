"""Listening ports for the servers that tests start.

A port the kernel hands out for `bind(0)` comes from its ephemeral range, the same range every
client socket's local port comes from: between picking such a port and a server binding it,
another test's client connection may take it ("Address already in use"), and with tests in two
processes (pytest-xdist) and load tests opening thousands of connections, it did. So ports come
from below the ephemeral range, from a block of their own per pytest process, and are checked
free before they are handed out.
"""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

FIRST_PORT = 10_000
BLOCKS = 4  # pytest processes that get disjoint blocks (gw0 … gw3); more share them


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) % BLOCKS if worker[2:].isdigit() else 0
    size = max((_ephemeral_start() - FIRST_PORT) // BLOCKS, 100)
    start = FIRST_PORT + index * size
    return range(start, start + size)


_candidates = itertools.cycle(_block())


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range."""
    for port in _candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("unreachable: the cycle never ends")
