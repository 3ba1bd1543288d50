"""Loopback ports for the servers the tests start.

`bind(("127.0.0.1", 0))` hands out a port from the kernel's ephemeral range, the range every
outgoing connection also takes its local port from, so a port found free that way can be
taken by someone else before the server binds it. These ports come from just below the
ephemeral range, where the kernel never assigns one on its own, and none is handed out
twice in one test run; the servers that the harnesses start still retry a failed bind.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_given: set[int] = set()
_rng = random.Random(os.getpid())


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port that is free now, outside the ephemeral range, never returned before."""
    low = _ephemeral_low()
    if low > 11024:  # a usual range (32768-60999): take ports from the 10,000 below it
        for _ in range(200):
            port = _rng.randrange(low - 10000, low)
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
    while True:  # no room below the ephemeral range: fall back to the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
