"""An image host on loopback that serves real images — and every way a host can abuse a fetcher.

The gateway fetches user-supplied URLs, so the far end is untrusted. This host plays both parts:

    /image/<key>        the bytes registered under <key> (with Content-Length): a well-behaved host;
                        with `keep_alive` (`--keep-alive`) it serves further requests on the same
                        connection, as HTTP/1.1 hosts do, unless the client asks to close
    /slow-body          headers at once, then one body byte every `drip` seconds, forever (slow-loris)
    /slow-headers       a status line, then one header byte every `drip` seconds, never finishing
    /stall              reads the request and never answers
    /endless            200 without Content-Length, then bytes as fast as the reader takes them,
                        until the reader hangs up (close-delimited body)
    /endless-chunked    the same with Transfer-Encoding: chunked
    /huge-length        declares Content-Length: 1 TB, then streams like /endless
    /gzip               a small gzip body that inflates 1000×, sent as Content-Encoding: gzip
    /redirect-loop      302 to itself
    anything else       404

It is a raw asyncio server (not an HTTP framework) because a framework would refuse to misbehave.
It runs on its own thread and loop, so a synchronous test and a separate gateway process can both
use it, and it records every connection (path, bytes sent, when the peer hung up) so a test can
assert that the fetcher let go of a hostile host, not only that the user got an answer.

`python -m reliability.hostile_host --port N --image KEY=FILE …` runs it as its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reliability.stream_server import ThreadedStreamServer
from testing_support.ports import LOOPBACK

_CHUNK = b"\xff" * 65536
_MAX_REQUEST_HEAD = 16 * 1024
_GZIP_BODY = gzip.compress(b"\0" * (4 * 1024 * 1024), compresslevel=9)


@dataclass
class Connection:
    path: str
    opened: float  # time.monotonic()
    closed: float | None = None
    bytes_sent: int = 0
    hung_up_by_peer: bool = False
    requests: int = 0  # more than 1 only on a kept-alive connection (`keep_alive`)


class HostileImageHost(ThreadedStreamServer):
    """Start with `start()` (or as a context manager); URLs from `url(path)`."""

    thread_name = "hostile image host"

    def __init__(
        self,
        *,
        drip: float = 0.5,
        image_delay: float = 0.0,
        keep_alive: bool = False,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        # A large backlog: the fuzz and hostile-host tests open many connections at once.
        super().__init__(host, port, backlog=1024)
        self.drip = drip
        # Seconds before an /image/ answer starts: a distant host's time to first byte.
        self.image_delay = image_delay
        # Serve further /image/ requests on the same connection, as real HTTP/1.1 hosts do. Off by
        # default: one request per connection keeps the hostile paths' bookkeeping per request.
        self.keep_alive = keep_alive
        self._images: dict[str, tuple[bytes, str]] = {}
        self._connections: list[Connection] = []
        self._lock = threading.Lock()

    # --- what tests use ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `data` at /image/<key>; returns its URL."""
        with self._lock:
            self._images[key] = (data, content_type)
        return self.url(f"/image/{key}")

    def url(self, path: str) -> str:
        return f"http://{self._bind[0]}:{self.port}{path}"

    def connections(self, path_prefix: str = "") -> list[Connection]:
        with self._lock:
            return [c for c in self._connections if c.path.startswith(path_prefix)]

    def open_connections(self, path_prefix: str = "") -> int:
        return sum(1 for c in self.connections(path_prefix) if c.closed is None)

    def wait_all_closed(self, path_prefix: str, timeout: float) -> bool:
        """True once every connection to `path_prefix` has ended (the fetcher let go)."""
        deadline = time.monotonic() + timeout
        while self.open_connections(path_prefix):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # --- the server -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(path="", opened=time.monotonic())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > _MAX_REQUEST_HEAD:
                    return
                request_line, _, header_lines = head.partition(b"\r\n")
                target = request_line.split(b" ")
                path = urlsplit(target[1].decode("latin-1")).path if len(target) >= 2 else ""
                conn.requests += 1
                if conn.requests == 1:
                    conn.path = path
                    with self._lock:
                        self._connections.append(conn)
                keep = self.keep_alive and path.startswith("/image/") and not _asks_to_close(header_lines)
                await self._respond(conn, path, keep, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            # On a kept-alive connection the peer hanging up between requests is how it ends.
            conn.hung_up_by_peer = True
        except asyncio.CancelledError:
            pass
        finally:
            conn.closed = time.monotonic()
            writer.close()
            # Cancelled (the host stopping) while idle on a kept-alive connection, the close
            # waiter is cancelled too: the connection is closed either way.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _send(self, conn: Connection, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        conn.bytes_sent += len(data)

    async def _respond(
        self,
        conn: Connection,
        path: str,
        keep: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if path.startswith("/image/"):
            connection = [("Connection", "keep-alive" if keep else "close")]
            with self._lock:
                found = self._images.get(path.removeprefix("/image/"))
            if found is None:
                await self._send(conn, writer, _head(404, [("Content-Length", "0"), *connection]))
                return
            data, content_type = found
            if self.image_delay:
                await asyncio.sleep(self.image_delay)
            headers = [("Content-Type", content_type), ("Content-Length", str(len(data))), *connection]
            await self._send(conn, writer, _head(200, headers) + data)
        elif path == "/slow-body":
            await self._send(
                conn, writer, _head(200, [("Content-Type", "image/jpeg"), ("Content-Length", "1000000")])
            )
            await self._drip(conn, reader, writer, b"\xff")
        elif path == "/slow-headers":
            await self._send(conn, writer, b"HTTP/1.1 200 OK\r\nX-Drip: ")
            await self._drip(conn, reader, writer, b"a")
        elif path == "/stall":
            # Wait for the peer to hang up; nothing is ever sent.
            await reader.read()
            conn.hung_up_by_peer = True
        elif path in ("/endless", "/huge-length"):
            headers = [("Content-Type", "image/jpeg"), ("Connection", "close")]
            if path == "/huge-length":
                headers.append(("Content-Length", str(10**12)))
            await self._send(conn, writer, _head(200, headers))
            while True:
                await self._send(conn, writer, _CHUNK)
        elif path == "/endless-chunked":
            await self._send(
                conn, writer, _head(200, [("Content-Type", "image/jpeg"), ("Transfer-Encoding", "chunked")])
            )
            chunk = b"%x\r\n" % len(_CHUNK) + _CHUNK + b"\r\n"
            while True:
                await self._send(conn, writer, chunk)
        elif path == "/gzip":
            await self._send(
                conn,
                writer,
                _head(
                    200,
                    [
                        ("Content-Type", "image/png"),
                        ("Content-Encoding", "gzip"),
                        ("Content-Length", str(len(_GZIP_BODY))),
                    ],
                )
                + _GZIP_BODY,
            )
        elif path == "/redirect-loop":
            await self._send(
                conn, writer, _head(302, [("Location", "/redirect-loop"), ("Content-Length", "0")])
            )
        else:
            await self._send(conn, writer, _head(404, [("Content-Length", "0")]))

    async def _drip(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, byte: bytes
    ) -> None:
        while not reader.at_eof():
            await asyncio.sleep(self.drip)
            await self._send(conn, writer, byte)
        conn.hung_up_by_peer = True


def _asks_to_close(header_lines: bytes) -> bool:
    """Whether the request says `Connection: close` (urllib, so the course's fetcher, always does)."""
    for line in header_lines.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection" and b"close" in value.lower():
            return True
    return False


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = {200: "OK", 302: "Found", 404: "Not Found"}[status]
    # One request per connection unless said otherwise (see _handle): say so, or clients would
    # reuse it and be reset.
    if not any(k.lower() == "connection" for k, _ in headers):
        headers = [*headers, ("Connection", "close")]
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reliability.hostile_host", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drip", type=float, default=0.5, help="seconds between the slow paths' bytes")
    parser.add_argument(
        "--image", action="append", default=[], metavar="KEY=FILE", help="serve FILE at /image/KEY"
    )
    parser.add_argument(
        "--image-delay", type=float, default=0.0, help="seconds before each /image/ answer starts (default 0)"
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="serve further /image/ requests on the same connection (default: close after each)",
    )
    args = parser.parse_args(argv)
    host = HostileImageHost(
        drip=args.drip,
        image_delay=args.image_delay,
        keep_alive=args.keep_alive,
        host=args.host,
        port=args.port,
    )
    for item in args.image:
        key, _, file = item.partition("=")
        kind = "image/png" if file.lower().endswith(".png") else "image/jpeg"
        host.put(key, Path(file).read_bytes(), kind)
    with contextlib.suppress(KeyboardInterrupt):
        host.serve_forever()


if __name__ == "__main__":
    main()
