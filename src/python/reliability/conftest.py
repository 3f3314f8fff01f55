"""Fixtures: loopback servers for the harness tests, and the real stack for the system tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from reliability.backend import Backend
from reliability.hostile_host import HostileImageHost
from reliability.images import sample_jpeg, sample_png
from testing_support.stack import ExportedModel, Gateway, export_demo_model, logs_dir, start_gateway


class CountingServer(ThreadingHTTPServer):
    """Answers GET /?sleep=S after S seconds and remembers how many requests overlapped."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: CountingServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        s = self.server
        with s.lock:
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            query = parse_qs(urlsplit(self.path).query)
            time.sleep(float(query.get("sleep", ["0"])[0]))
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with s.lock:
                s.in_flight -= 1
                s.served += 1

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


# --- the real stack, for the system tests (tensorflow resolve) ----------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def tiny_model(workdir: Path) -> ExportedModel:
    return export_demo_model(workdir, "tiny")


@pytest.fixture(scope="module")
def backend(tiny_model: ExportedModel, workdir: Path) -> Iterator[Backend]:
    """The model server serving the tiny demo model, behind a fault proxy; healed after each test."""
    b = Backend(tiny_model, logs_dir(workdir))
    yield b
    b.close()


@pytest.fixture()
def healthy_backend(backend: Backend) -> Iterator[Backend]:
    backend.ensure_running()
    yield backend
    backend.ensure_running()


@pytest.fixture(scope="module")
def image_host() -> Iterator[HostileImageHost]:
    with HostileImageHost(drip=0.3) as host:
        host.put("photo.jpg", sample_jpeg(640, 480, seed=1))
        host.put("small.png", sample_png(200, 150, seed=2), "image/png")
        yield host


GatewayFactory = Callable[..., Gateway]


@pytest.fixture()
def start_gateway_for(workdir: Path) -> Iterator[GatewayFactory]:
    """`start_gateway_for(backend_address, {GATEWAY_…: …})`; every gateway started is stopped after."""
    started: list[Gateway] = []

    def start(tf_serving: str, settings: dict[str, str] | None = None, **kwargs: object) -> Gateway:
        gateway = start_gateway(tf_serving, logs_dir(workdir), settings, **kwargs)  # type: ignore[arg-type]
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.process.stop()
