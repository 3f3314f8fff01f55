"""Prometheus metrics of one app instance (its own registry: two apps in one process never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("fetch", "queue", "decode", "preprocess", "predict")

# From a fast local decode (~1 ms) to a slow image host or a cold model (tens of seconds).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "gateway_errors",
            "Error answers by kind (the error code of the JSON answer)",
            ["code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer a classification request",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "gateway_stage_duration_seconds",
            "Time per request in each stage: fetch, queue (waiting for a slot), decode, preprocess, predict",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("gateway_images", "Images classified", registry=self.registry)
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Classification requests being handled", registry=self.registry
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
