"""Thousands of hostile connections against the whole stack: other users are still served.

The issue's repro, at CI size: connections that each send half a request head and then nothing.
With no limits they took every descriptor the gateway had, and then `/healthz` and `/predict`
timed out for everyone. In CI the gateway gets 1024 descriptors against 3000 such connections;
`RELIABILITY_SCALE=full` holds 20,000 against the process's own limit.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from reliability.conftest import GatewayFactory
from reliability.hostile_clients import HalfOpenFlood
from reliability.hostile_host import HostileImageHost
from reliability.report import record
from reliability.scale import current
from reliability.stack import Backend

SCALE = current()


def _timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[int, float]:
    start = time.monotonic()
    # A new connection per request: the case of a client arriving during the flood.
    response = client.request(method, path, headers={"Connection": "close"}, **kwargs)  # type: ignore[arg-type]
    return response.status_code, time.monotonic() - start


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
        with HalfOpenFlood(gateway.port, SCALE.hostile_connections) as flood:
            health = [_timed(client, "GET", "/healthz") for _ in range(10)]
            predict = [_timed(client, "POST", "/predict", json={"url": url}) for _ in range(10)]
            rss_during = gateway.process.rss()
        alive = gateway.process.alive()
    log = Path(gateway.process.log_path).read_text()
    summaries = log.count("connection limits:")
    figures = {
        "hostile_connections": SCALE.hostile_connections,
        "opened": flood.opened,
        "refused_at_connect": flood.refused,
        "closed_by_gateway": flood.closed_by_server,
        "healthz_max_s": round(max(t for _, t in health), 3),
        "predict_max_s": round(max(t for _, t in predict), 3),
        "rss_growth_mb": round((rss_during - rss_before) / 2**20, 1),
        "log_summaries": summaries,
        "accept_errors_logged": log.count("out of system resource"),
    }
    record("connection_flood", figures)
    assert alive
    assert [s for s, _ in health] == [200] * 10, figures
    assert [s for s, _ in predict] == [200] * 10, figures
    assert figures["healthz_max_s"] < 1.0, figures
    assert figures["predict_max_s"] < 1.0, figures
    assert flood.opened + flood.refused == SCALE.hostile_connections
    # The log counts refusals in a line per interval (10 s), not a line per connection.
    assert summaries <= 1 + 60 // 10, figures
    assert "Traceback" not in log
