"""OpenTelemetry traces: a server span per HTTP request, a child span per stage of a classification.

Off unless `GATEWAY_OTLP_ENDPOINT` names a collector: then `Traces.start()` (the app's lifespan)
builds a TracerProvider of its own (sampled parent-based by `GATEWAY_TRACE_SAMPLE_RATIO`) whose
spans a `BatchSpanProcessor` exports as OTLP over HTTP from a thread, through a bounded queue: a
collector that is down or slow costs dropped spans, never a request's time. Off, nothing is
installed, no span object is made, and each helper below costs one context-variable read.

`ServerSpans` (around the whole app, inside the request-id middleware) opens the server span,
continuing the client's W3C `traceparent`/`tracestate`, and names it by the route template. The
classification path marks its stages with `span()` (fetch, predict: on the event loop) and
`stage()` (queue, decode, preprocess: finished spans with the times the code measured; decode and
preprocess run on the decode threads, which get the request's context by `contextvars`).
`grpc_metadata()` is the current span's `traceparent` for TF Serving's Predict call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.request_ids import current_request_id
from gateway.settings import Tracing

log = logging.getLogger("gateway")

TRACES_PATH = "/v1/traces"
_PROPAGATOR = TraceContextTextMapPropagator()
_CONTEXT_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}
# The tracer of the request being handled: None outside a request or with tracing off.
_tracer: ContextVar[Tracer | None] = ContextVar("tracer", default=None)


def traces_url(endpoint: str) -> str:
    """The URL spans are posted to: `endpoint` as given, or with OTLP's /v1/traces when it has no
    path (a collector's base URL, `http://collector:4318`)."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


class Traces:
    """The app's traces: the SDK's provider and exporter while the app runs, when configured."""

    def __init__(self, settings: Tracing) -> None:
        self.settings = settings
        self.tracer: Tracer | None = None
        self._provider: Any = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.endpoint)

    def start(self) -> None:
        """Build the provider and its export thread (nothing when tracing is off)."""
        if not self.enabled or self._provider is not None:
            return
        # The SDK is imported only when tracing is on: off, the gateway never loads it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        s = self.settings
        provider = TracerProvider(
            resource=Resource.create({"service.name": s.service_name}),
            sampler=ParentBased(TraceIdRatioBased(s.sample_ratio)),
        )
        exporter = OTLPSpanExporter(endpoint=traces_url(s.endpoint), timeout=s.export_timeout)
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=s.queue_size,
                max_export_batch_size=min(512, s.queue_size),
                export_timeout_millis=s.export_timeout * 1000,
            )
        )
        self._provider = provider
        self.tracer = provider.get_tracer("gateway")
        log.info(
            "tracing: spans to %s, sampled at %g, as %s",
            traces_url(s.endpoint), s.sample_ratio, s.service_name,
        )  # fmt: skip

    def shutdown(self) -> None:
        """Export the spans still queued and stop the export thread, waiting at most the export
        timeout: the SDK's own shutdown may wait 30 s for a collector that does not answer."""
        provider, self._provider, self.tracer = self._provider, None, None
        if provider is not None:
            stopping = threading.Thread(target=provider.shutdown, name="traces-shutdown", daemon=True)
            stopping.start()
            stopping.join(self.settings.export_timeout)


class ServerSpans:
    """ASGI middleware: one SERVER span per HTTP request, named `METHOD /route/{template}`."""

    def __init__(self, app: ASGIApp, traces: Traces, routes: list[BaseRoute]) -> None:
        self.app = app
        self.traces = traces
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.traces.tracer
        if tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        user_agent = ""
        for key, value in scope["headers"]:
            if key in _CONTEXT_HEADERS:
                carrier[_CONTEXT_HEADERS[key]] = value.decode("latin-1")
            elif key == b"user-agent":
                user_agent = value.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        method = scope["method"]
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            "gateway.request_id": current_request_id(),
        }
        if scope.get("client"):
            attributes["client.address"] = scope["client"][0]
        if user_agent:
            attributes["user_agent.original"] = user_agent
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            token = _tracer.set(tracer)
            try:
                await self.app(scope, receive, send_status)
            finally:
                _tracer.reset(token)
                route = self._route(scope)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        # A 4xx is the client's doing; a 5xx is the server's (OTel's HTTP conventions).
                        span.set_status(Status(StatusCode.ERROR))
                        span.set_attribute("error.type", str(status))

    def _route(self, scope: Scope) -> str | None:
        """The template of the route the path matched (a method mismatch included), or None."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                path: str | None = getattr(route, "path", None)
                return path
        return None


def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, when: bool = True
) -> contextlib.AbstractContextManager[Span]:
    """A child of the current span for the block (its exception recorded), or nothing when the
    request is not traced or `when` is false (the block runs all the same)."""
    tracer = _tracer.get()
    if tracer is None or not when:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)


def stage(
    name: str,
    start: float,
    end: float,
    attributes: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
) -> None:
    """A finished child of the current span, from `start` to `end` (time.perf_counter() values
    the code measured anyway), failed with `error` if given."""
    stages((name, start, end, attributes), error=error)


def stages(
    *spans: tuple[str, float, float, Mapping[str, Any] | None], error: BaseException | None = None
) -> None:
    """Finished children of the current span, each `(name, start, end, attributes)` as in `stage`,
    on one conversion of perf_counter to wall-clock time: stages that follow each other exactly
    stay so. `error` fails the last one."""
    tracer = _tracer.get()
    if tracer is None:
        return
    now_ns, now = time.time_ns(), time.perf_counter()
    for i, (name, start, end, attributes) in enumerate(spans):
        child = tracer.start_span(name, attributes=attributes, start_time=now_ns - int((now - start) * 1e9))
        if error is not None and i == len(spans) - 1:
            child.record_exception(error)
            child.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        child.end(end_time=now_ns - int((now - end) * 1e9))


def grpc_metadata() -> tuple[tuple[str, str], ...] | None:
    """`traceparent` (and `tracestate`) of the current span, as gRPC metadata; None untraced."""
    if _tracer.get() is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items()) or None


class _NoSpan(contextlib.AbstractContextManager[Span]):
    """A reusable context manager giving the API's invalid span, whose methods do nothing."""

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()
