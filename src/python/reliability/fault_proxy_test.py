from __future__ import annotations

import time

import httpx
import pytest

from reliability.fault_proxy import FaultProxy
from testing_support.counting_server import CountingServer


def test_passes_traffic_through_unchanged(counting_server: CountingServer) -> None:
    port = int(counting_server.server_address[1])
    with FaultProxy(port) as proxy:
        r = httpx.get(f"http://{proxy.address}/", timeout=5)
    assert (r.status_code, r.text) == (200, "ok")


def test_a_delay_makes_the_service_slow_and_removing_it_heals_it(counting_server: CountingServer) -> None:
    port = int(counting_server.server_address[1])
    with FaultProxy(port) as proxy, httpx.Client(base_url=f"http://{proxy.address}", timeout=5) as client:
        proxy.delay = 2.0
        with pytest.raises(httpx.ReadTimeout):
            client.get("/", timeout=httpx.Timeout(5.0, read=0.5))
        proxy.delay = 0.0
        started = time.monotonic()
        assert client.get("/").status_code == 200
        # Healed: the answer does not wait out the old delay.
        assert time.monotonic() - started < 1.5


def test_a_dead_upstream_looks_like_a_dead_service(counting_server: CountingServer) -> None:
    port = int(counting_server.server_address[1])
    counting_server.shutdown()
    counting_server.server_close()
    with FaultProxy(port) as proxy, pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://{proxy.address}/", timeout=5)
