"""Fixtures for the gateway's tests: an image host and in-process gateways, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gateway import Settings
from gateway.guarded_resolver import Resolver
from testing_support.image_host import ImageHost
from testing_support.in_process_gateway import RunningGateway


@pytest.fixture()
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()
    try:
        yield host
    finally:
        host.close()


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
