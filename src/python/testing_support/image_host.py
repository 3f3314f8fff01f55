"""Real servers on loopback for the gateway's tests: an image host, the gateway app under uvicorn.

Everything binds 127.0.0.x on ports the kernel picks, runs in a background thread and is stopped
when the test ends.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import uvicorn
from PIL import Image

from gateway import Settings, create_app
from gateway.guarded_resolver import Resolver


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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


@pytest.fixture()
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()
    try:
        yield host
    finally:
        host.close()


def resolver_from(answers: Mapping[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A resolver the test controls: name -> addresses; unknown names fail like NXDOMAIN."""

    async def resolve(name: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(name)
        if name not in answers:
            raise OSError(f"[Errno -2] Name or service not known: {name}")
        return list(answers[name])

    return resolve


class RunningGateway:
    """`create_app(settings)` served by uvicorn in a thread on a free loopback port."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        port = free_port()
        app = create_app(settings, resolver=resolver) if resolver else create_app(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)


@pytest.fixture()
def run_gateway() -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def run(settings: Settings, resolver: Resolver | None = None) -> RunningGateway:
        gateway = RunningGateway(settings, resolver)
        started.append(gateway)
        return gateway

    try:
        yield run
    finally:
        for gateway in started:
            gateway.stop()


def closed_port_address() -> str:
    """host:port where nothing listens (connections are refused at once)."""
    return f"127.0.0.1:{free_port()}"
