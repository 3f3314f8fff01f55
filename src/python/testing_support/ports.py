"""Free loopback ports for the servers and processes that tests and benchmarks start."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` nothing listens on right now.

    The kernel picks it (bind to port 0); the socket is closed before the port is handed out, so a
    process started next can bind it. Ports come from the ephemeral range, which other tests running
    in parallel also draw from, but the kernel hands out a just-freed port last.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def closed_port_address() -> str:
    """host:port where nothing listens (connections are refused at once)."""
    return f"{LOOPBACK}:{free_port()}"
