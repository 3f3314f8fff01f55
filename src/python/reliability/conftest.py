"""Fixtures: loopback servers for the harness tests, and the real stack for the system tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.backend import Backend
from reliability.hostile_host import HostileImageHost
from reliability.images import sample_jpeg, sample_png
from testing_support.counting_server import CountingServer
from testing_support.stack import (
    ExportedModel,
    Gateway,
    GatewayFactory,
    export_demo_model,
    logs_dir,
    start_gateway,
)


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
