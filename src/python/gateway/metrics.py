"""Prometheus metrics of one app instance (its own registry: two apps in one process never mix).

The rules and dashboard in deploy/monitoring/ read these names and labels; change them together.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("fetch", "queue", "decode", "preprocess", "predict")

# From a fast local decode (~1 ms) to a slow image host or a cold model (tens of seconds).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The model version that answered the request being handled, for its `gateway_requests` count.
# A request is one asyncio task from the middleware down to the Predict call, so what the
# classification sets is what the middleware reads when the answer starts; "" when no model
# version answered (health checks, refused or failed requests).
_served_version: ContextVar[str] = ContextVar("gateway_served_version", default="")
# The label the canary split sent the request being handled to ("" when it did not route it), for
# its `gateway_rollout_requests` count, made with the answer's status (errors included: a failed
# request has no served version, but it has the side of the split that failed it).
_routed_label: ContextVar[str] = ContextVar("gateway_routed_label", default="")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests answered, by route, status code and the model version that answered "
            "(empty when none did)",
            ["route", "status", "model_version"],
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
        self.model_ready = Gauge(
            "gateway_model_ready",
            "1 if TF Serving had a version of the model AVAILABLE, with a signature the gateway can "
            "use, at the gateway's last readiness check (start-up and every /readyz); else 0",
            registry=self.registry,
        )
        self.model_versions = Gauge(
            "gateway_model_version_available",
            "1 for each version of the model TF Serving reported AVAILABLE at the last readiness check",
            ["model_version"],
            registry=self.registry,
        )
        self.prediction_log_lines = Counter(
            "gateway_prediction_log_lines",
            "Prediction log lines written (GATEWAY_PREDICTION_LOG)",
            registry=self.registry,
        )
        self.prediction_log_dropped = Counter(
            "gateway_prediction_log_dropped",
            "Prediction log lines lost, by reason: buffer_full (the writer was "
            "GATEWAY_PREDICTION_LOG_BUFFER lines behind) or write_error (the file refused them: disk "
            "full, I/O error); the requests were answered all the same",
            ["reason"],
            registry=self.registry,
        )
        self.rollout_requests = Counter(
            "gateway_rollout_requests",
            "HTTP requests the canary split sent to a version label (GATEWAY_STABLE_LABEL or "
            "GATEWAY_CANARY_LABEL), by label and the answer's status code; requests that pin a "
            "version or label are not counted",
            ["label", "status"],
            registry=self.registry,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for reason in ("buffer_full", "write_error"):
            self.prediction_log_dropped.labels(reason)

    def start_request(self) -> None:
        """A new request: nothing has answered it yet."""
        _served_version.set("")
        _routed_label.set("")

    def served_by(self, version: int | None) -> None:
        """The model version that answered the current request (TF Serving's PredictResponse)."""
        _served_version.set("" if version is None else str(version))

    def routed(self, label: str) -> None:
        """The canary split sent the current request to `label` (one of the two the settings name)."""
        _routed_label.set(label)

    def count_request(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status), _served_version.get()).inc()
        if label := _routed_label.get():
            self.rollout_requests.labels(label, str(status)).inc()

    def note_readiness(self, ready: bool, versions: Iterable[int]) -> None:
        """What a readiness check found: ready or not, and the AVAILABLE versions."""
        self.model_ready.set(1 if ready else 0)
        self.model_versions.clear()
        for version in versions:
            self.model_versions.labels(str(version)).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
