"""Many hostile connections held open against a server on loopback, from child processes.

    with HalfOpenFlood(port, 3000) as flood:     each connection sends b"GET / HTTP/1.1\\r\\nX: "
        ...                                      and never finishes its head
    flood.opened, flood.refused, flood.closed_by_server

The connections live in `python -m reliability.hostile_clients` children (at most
`PER_PROCESS` each), so a flood larger than this process's descriptor limit can be held, and
their source addresses are spread over 127.0.0.2-127.0.0.251 so that tens of thousands of them
never run out of ephemeral ports. Stopping a flood closes every connection (the children exit).
"""

from __future__ import annotations

import argparse
import errno
import select
import socket
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType

from testing_support.ports import LOOPBACK
from testing_support.processes import child_environment, python_module

PER_PROCESS = 8000
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
_SOURCES = 250


class HalfOpenFlood:
    """`count` connections to `port`, each with an unfinished request head, held until `stop()`."""

    def __init__(self, port: int, count: int, *, host: str = LOOPBACK, payload: bytes = HALF_HEAD) -> None:
        self.port = port
        self.count = count
        self.host = host
        self.payload = payload
        self.opened = 0  # connect() succeeded and the payload was sent
        self.refused = 0  # connect() or send failed (refused, reset, timed out)
        self.closed_by_server = 0  # of the opened ones, closed by the server when the flood stopped
        self._children: list[subprocess.Popen[str]] = []

    def start(self) -> HalfOpenFlood:
        remaining = self.count
        index = 0
        while remaining > 0:
            share = min(PER_PROCESS, remaining)
            argv = python_module(
                "reliability.hostile_clients",
                "--host", self.host, "--port", str(self.port), "--connections", str(share),
                "--first-source", str(2 + (index * 50) % _SOURCES), "--payload", self.payload.hex(),
            )  # fmt: skip
            # argv is built here (no shell); S603 cannot know that.
            child = subprocess.Popen(
                argv,  # noqa: S603
                env=child_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self._children.append(child)
            remaining -= share
            index += 1
        for child in self._children:
            assert child.stdout is not None
            opened, refused = (int(x) for x in child.stdout.readline().split()[1:3])
            self.opened += opened
            self.refused += refused
        return self

    def stop(self) -> None:
        for child in self._children:
            assert child.stdin is not None
            assert child.stdout is not None
            child.stdin.close()
            line = child.stdout.readline().split()
            if line[:1] == ["closed"]:
                self.closed_by_server += int(line[1])
            child.wait(30)
        self._children.clear()

    def __enter__(self) -> HalfOpenFlood:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _hold(host: str, port: int, count: int, first_source: int, payload: bytes) -> None:
    held: list[socket.socket] = []
    refused = 0
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if host.startswith("127."):
                s.bind((f"127.0.0.{2 + (first_source - 2 + i) % _SOURCES}", 0))
            s.settimeout(5.0)
            s.connect((host, port))
            s.sendall(payload)
        except OSError:
            refused += 1
            s.close()
            continue
        held.append(s)
    print(f"ready {len(held)} {refused}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    closed = 0
    for s in held:
        if _closed_by_peer(s):
            closed += 1
        s.close()
    print(f"closed {closed}", flush=True)


def _closed_by_peer(s: socket.socket) -> bool:
    poller = select.poll()
    poller.register(s, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        s.setblocking(False)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError as e:
        return e.errno in (errno.ECONNRESET, errno.EPIPE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hold connections with unfinished request heads open.")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--first-source", type=int, default=2)
    parser.add_argument("--payload", default=HALF_HEAD.hex(), help="bytes each connection sends, in hex")
    args = parser.parse_args(argv)
    _hold(args.host, args.port, args.connections, args.first_source, bytes.fromhex(args.payload))


if __name__ == "__main__":
    main()
