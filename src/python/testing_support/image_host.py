"""An image host on loopback for the gateway's tests: a real HTTP server answering each path as told.

It binds 127.0.0.x on a port the kernel picks and serves from a background thread until `close()`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 60)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    # Stream the body in pieces without Content-Length (chunked), as some hosts do.
    chunked: bool = False
    # Block until this event is set before answering (a slow or stuck host).
    hold: threading.Event | None = None


class ImageHost:
    """A real HTTP server on a loopback address answering each path with a configured `Reply`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Reply] = {}
        self.hits: list[str] = []
        host_ref = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # - http.server's naming
                host_ref.hits.append(self.path)
                reply = host_ref.routes.get(self.path, Reply(404, b"not found"))
                if reply.hold is not None:
                    reply.hold.wait(30)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(reply.body), 65536):
                        piece = reply.body[i : i + 65536]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _QuietServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that stop reading on purpose (byte limits, timeouts) break the pipe; not news.
        pass
