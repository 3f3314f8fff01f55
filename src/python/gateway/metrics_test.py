"""The request counter's model_version label and the readiness gauges, as a scrape reads them."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics


def _samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    page = metrics.render().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == name
    }


def test_each_request_is_counted_under_the_version_that_answered_it() -> None:
    metrics = Metrics()

    async def request(version: int | None, delay: float, status: int) -> None:
        # One task per request, as the server runs them; interleaved on purpose.
        metrics.start_request()
        await asyncio.sleep(delay)
        metrics.served_by(version)
        await asyncio.sleep(delay)
        metrics.count_request("/predict", status)

    async def traffic() -> None:
        await asyncio.gather(
            request(1, 0.02, 200), request(2, 0.01, 200), request(2, 0.0, 200), request(None, 0.01, 503)
        )

    asyncio.run(traffic())
    counts = _samples(metrics, "gateway_requests_total")
    assert counts == {
        (("model_version", "1"), ("route", "/predict"), ("status", "200")): 1.0,
        (("model_version", "2"), ("route", "/predict"), ("status", "200")): 2.0,
        (("model_version", ""), ("route", "/predict"), ("status", "503")): 1.0,
    }


def test_a_new_request_does_not_inherit_the_last_ones_version() -> None:
    # In-process clients (httpx's ASGI transport) run every request in the caller's task.
    metrics = Metrics()

    async def two_requests() -> None:
        metrics.start_request()
        metrics.served_by(3)
        metrics.count_request("/predict", 200)
        metrics.start_request()
        metrics.count_request("/healthz", 200)

    asyncio.run(two_requests())
    counts = _samples(metrics, "gateway_requests_total")
    assert counts[(("model_version", ""), ("route", "/healthz"), ("status", "200"))] == 1.0


def test_readiness_gauges_follow_the_last_check() -> None:
    metrics = Metrics()
    assert _samples(metrics, "gateway_model_ready") == {(): 0.0}  # nothing checked yet
    metrics.note_readiness(True, (1, 2))
    assert _samples(metrics, "gateway_model_ready") == {(): 1.0}
    assert _samples(metrics, "gateway_model_version_available") == {
        (("model_version", "1"),): 1.0,
        (("model_version", "2"),): 1.0,
    }
    # Version 1 unloaded, then the model gone: versions no longer AVAILABLE leave the page.
    metrics.note_readiness(True, (2,))
    assert _samples(metrics, "gateway_model_version_available") == {(("model_version", "2"),): 1.0}
    metrics.note_readiness(False, ())
    assert _samples(metrics, "gateway_model_ready") == {(): 0.0}
    assert _samples(metrics, "gateway_model_version_available") == {}
