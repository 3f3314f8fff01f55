"""Thousands of hostile connections against the whole stack: other users are still served.

The issue's repro, at CI size: connections that each send half a request head and then nothing.
With no limits they took every descriptor the gateway had, and then `/healthz` and `/predict`
timed out for everyone. In CI the gateway gets 1024 descriptors against 3000 such connections;
`RELIABILITY_SCALE=full` holds 20,000 against the process's own limit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from reliability.backend import Backend
from reliability.hostile_clients import HalfOpenFlood
from reliability.hostile_host import HostileImageHost
from reliability.report import record
from reliability.scale import current
from testing_support.stack import GatewayFactory

SCALE = current()


def _timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[int, float]:
    start = time.monotonic()
    # A new connection per request: the case of a client arriving during the flood.
    response = client.request(method, path, headers={"Connection": "close"}, **kwargs)  # type: ignore[arg-type]
    return response.status_code, time.monotonic() - start


class _Prober(threading.Thread):
    """GET /healthz on a new connection every 0.1 s until stopped: latencies while a flood builds."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.latencies: list[float] = []
        self.failures = 0
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._done.is_set():
                try:
                    status, took = _timed(client, "GET", "/healthz")
                    self.latencies.append(took)
                    self.failures += status != 200
                except httpx.HTTPError:
                    self.failures += 1
                self._done.wait(0.1)

    def stop(self) -> None:
        self._done.set()
        self.join(15)


def test_hostile_half_open_connections_leave_healthz_and_predict_answering_within_a_second(
    healthy_backend: Backend, image_host: HostileImageHost, start_gateway_for: GatewayFactory
) -> None:
    gateway = start_gateway_for(
        healthy_backend.address,
        # The hostile heads must not simply time out during the test: the cap has to cope.
        {"GATEWAY_HEADER_TIMEOUT": "120", "GATEWAY_IDLE_TIMEOUT": "120"},
        descriptor_limit=1024 if SCALE.name == "ci" else None,
    )
    url = image_host.url("/image/photo.jpg")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        warm = client.post("/predict", json={"url": url})
        assert warm.status_code == 200, warm.text
        rss_before = gateway.process.rss()
        prober = _Prober(gateway.url)
        prober.start()
        with HalfOpenFlood(gateway.port, SCALE.hostile_connections) as flood:
            prober.stop()
            health = [_timed(client, "GET", "/healthz") for _ in range(10)]
            predict = [_timed(client, "POST", "/predict", json={"url": url}) for _ in range(10)]
            rss_during = gateway.process.rss()
        alive = gateway.process.alive()
    log = Path(gateway.process.log_path).read_text()
    summaries = log.count("connection limits:")
    healthz_max = max(t for _, t in health)
    predict_max = max(t for _, t in predict)
    figures: dict[str, object] = {
        "hostile_connections": SCALE.hostile_connections,
        "opened": flood.opened,
        "refused_at_connect": flood.refused,
        "closed_by_gateway": flood.closed_by_server,
        "healthz_s": [round(t, 3) for _, t in health],
        "predict_s": [round(t, 3) for _, t in predict],
        "healthz_max_s": round(healthz_max, 3),
        # While the hostile connections were being opened (the gateway accepting and evicting).
        "healthz_during_opening_max_s": round(max(prober.latencies, default=0.0), 3),
        "healthz_during_opening_failures": prober.failures,
        "healthz_during_opening_count": len(prober.latencies),
        "predict_max_s": round(predict_max, 3),
        "rss_growth_mb": round((rss_during - rss_before) / 2**20, 1),
        "log_summaries": summaries,
        "accept_errors_logged": log.count("out of system resource"),
    }
    record("connection_flood", figures)
    assert alive
    assert [s for s, _ in health] == [200] * 10, figures
    assert [s for s, _ in predict] == [200] * 10, figures
    assert healthz_max < 1.0, figures
    assert predict_max < 1.0, figures
    assert prober.failures == 0, figures
    assert flood.opened + flood.refused == SCALE.hostile_connections
    # The log counts refusals in a line per interval (10 s), not a line per connection.
    assert summaries <= 1 + 60 // 10, figures
    assert "Traceback" not in log
