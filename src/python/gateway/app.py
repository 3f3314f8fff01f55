"""`create_app(settings)`: the Starlette app, its routes and the lifespan of its clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clothing_preproc import PreprocessingError
from gateway.api_keys import KeyTable, OnRefused, RequireKey
from gateway.classify import Classifier
from gateway.cors import Cors
from gateway.errors import GatewayError, describe, error_response
from gateway.fetch import Fetcher
from gateway.guarded_resolver import Resolver
from gateway.idle_memory import give_back_when_idle
from gateway.inputs import BodyLimit, json_limit
from gateway.kserve_v2_grpc import EXTRA_CALLS, GrpcFront, InferenceService
from gateway.metrics import Metrics
from gateway.name_lookup import BoundedResolver
from gateway.openapi import openapi_schema, with_api_keys
from gateway.prediction_log import PredictionLogger, note_route
from gateway.request_ids import RequestIds
from gateway.routes import Api, Services, metrics_response
from gateway.serving import ServingClient
from gateway.settings import Settings
from gateway.tracing import ServerSpans, Traces

log = logging.getLogger("gateway")

_JSON_OVERHEAD = 1024 * 1024


def create_app(
    settings: Settings, *, resolver: Resolver | None = None, metrics: Metrics | None = None
) -> Starlette:
    """The gateway app. `resolver` resolves image URL host names (default: the operating system's,
    within `settings.fetch.lookups`; tests pass their own). Each part gets only its own settings.
    With `GATEWAY_METRICS_PORT` set, /metrics is not among its routes: `metrics_app(metrics)`
    serves them on that port. `SettingError` if the prediction log's file cannot be opened."""
    target = settings.serving
    metrics = metrics or Metrics()
    # Opened here, at start, so that a path the gateway cannot write stops it with one line.
    prediction_log = PredictionLogger.open(settings.prediction_log, metrics)
    traces = Traces(settings.tracing)
    api = Api(
        target,
        metrics,
        openapi_schema(target, settings.decoding),
        description=target.description,
        decoding=settings.decoding,
        rollout=settings.rollout,
    )
    if settings.access.keys_on:
        api.openapi = with_api_keys(api.openapi)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        traces.start()
        serving = ServingClient(target)
        lookups = None
        names = resolver
        if names is None:
            # Its own bounded threads: a hung DNS answer costs only the requests that need it.
            names = lookups = BoundedResolver(settings.fetch.lookups)
        fetcher = Fetcher(settings.fetch, names, max_bytes=target.limits.max_bytes)
        pool = ThreadPoolExecutor(max_workers=settings.admission.threads, thread_name_prefix="preprocess")
        if prediction_log is not None:
            prediction_log.start()
        classifier = Classifier(serving, fetcher, pool, metrics, settings.admission, prediction_log)
        state = await serving.readiness()
        metrics.note_readiness(state.ready, state.versions)
        if state.ready:
            info = await serving.info()
            log.info(
                "model %s ready: input %s, output %s, image %s, %d labels",
                target.model_name, info.input_name, info.output_name,
                "×".join(map(str, info.preprocessing.target_size)), len(info.labels),
            )  # fmt: skip
        else:
            # Not fatal: TF Serving often starts after the gateway; /readyz reports until it is up.
            log.warning("TF Serving not ready yet: %s", state.detail or state.reason)
        # With no memory kept (GATEWAY_KEEP_FREED_MB=0) glibc gives it back by itself.
        trimmer = None
        if settings.listener.keep_freed_mb:
            trimmer = asyncio.create_task(give_back_when_idle(classifier.limit, pool))
        services = Services(serving=serving, classifier=classifier)
        # KServe v2 over gRPC, on this event loop; main begins its drain with the HTTP server's.
        grpc_front = None
        if settings.grpc.port:
            grpc_front = GrpcFront(
                settings.grpc,
                settings.listener.host,
                max_calls=settings.admission.max_concurrency + EXTRA_CALLS,
                max_message_bytes=settings.grpc.message_limit(target.max_batch, target.limits.max_bytes),
                grace=settings.listener.shutdown_grace,
            )
            app.state.grpc_front = grpc_front
            await grpc_front.start(
                InferenceService(
                    target,
                    services,
                    metrics,
                    versions=api.versions,
                    decoding=api.decoding,
                    keys=KeyTable(settings.access.keys) if settings.access.keys_on else None,
                )
            )
        try:
            # Starlette hands this state to every request (`request.state.services`).
            yield {"services": services}
        finally:
            if grpc_front is not None:
                await grpc_front.stop()  # first: its calls in progress use the clients below
            if trimmer is not None:
                trimmer.cancel()
            await fetcher.aclose()
            if lookups is not None:
                lookups.close()
            await serving.close()
            pool.shutdown(wait=True, cancel_futures=True)
            if prediction_log is not None:
                # The lines of the last requests are written before the process ends.
                await asyncio.to_thread(prediction_log.close)
            # The last requests' spans are exported (within GATEWAY_OTLP_TIMEOUT) before the end.
            await asyncio.to_thread(traces.shutdown)

    async def on_error(request: Request, exc: Exception) -> Response:
        metrics.errors.labels(describe(exc).code).inc()
        return error_response(exc, request.url.path)

    routes = [
        Route("/", api.page, methods=["GET"]),
        Route("/static/{name}", api.asset, methods=["GET"]),
        Route("/predict", api.predict, methods=["POST"]),
        Route("/v1/classify", api.classify, methods=["POST"]),
        Route("/v1/classify/batch", api.classify_batch, methods=["POST"]),
        # TF Serving's REST API (KServe v1). Starlette matches the literal ":predict" after the
        # name (a name is [^/]+, backtracked), so these come before the status route.
        Route("/v1/models/{name}:predict", api.v1_predict, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}:predict", api.v1_predict, methods=["POST"]),
        Route("/v1/models/{name}/labels/{label}:predict", api.v1_predict, methods=["POST"]),
        Route("/v1/models/{name}", api.v1_model_status, methods=["GET"]),
        Route("/v1/models/{name}/versions/{version}", api.v1_model_status, methods=["GET"]),
        Route("/v1/models/{name}/labels/{label}", api.v1_model_status, methods=["GET"]),
        Route("/v1/models/{name}/metadata", api.v1_model_metadata, methods=["GET"]),
        Route("/v1/models/{name}/versions/{version}/metadata", api.v1_model_metadata, methods=["GET"]),
        Route("/v1/models/{name}/labels/{label}/metadata", api.v1_model_metadata, methods=["GET"]),
        # KServe's Open Inference Protocol (v2), REST.
        Route("/v2/health/live", api.v2_live, methods=["GET"]),
        Route("/v2/health/ready", api.v2_ready, methods=["GET"]),
        Route("/v2/models/{name}", api.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", api.v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", api.v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", api.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", api.v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", api.v2_infer, methods=["POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/openapi.json", api.openapi_schema, methods=["GET"]),
    ]
    if not settings.listener.metrics_port:
        routes.append(Route("/metrics", api.metrics_page, methods=["GET"]))
    known_paths = {route.path for route in routes}
    # The largest request: a full batch of images as base64 JSON (a third more than uploads).
    max_body = json_limit(target.max_batch, target.limits.max_bytes) + _JSON_OVERHEAD
    return _GatewayApp(
        traces,
        routes=routes,
        middleware=[
            Middleware(_CountRequests, metrics=metrics, known_paths=known_paths),
            Middleware(BodyLimit, max_bytes=max_body),
            *_access_middleware(settings, on_error),
        ],
        # GatewayError and PreprocessingError are answered by the router's exception middleware;
        # Exception goes to Starlette's outermost middleware, which also logs the traceback.
        exception_handlers={
            HTTPException: on_error,
            GatewayError: on_error,
            PreprocessingError: on_error,
            # A client that hung up mid-body: answered here, not by the outermost middleware, which
            # re-raises whatever it handles (uvicorn then logs a traceback per disconnect).
            ClientDisconnect: on_error,
            Exception: on_error,
        },
        lifespan=lifespan,
    )


def _access_middleware(settings: Settings, on_refused: OnRefused) -> list[Middleware]:
    """CORS, then API keys, each only when configured: a preflight is answered before a key is
    asked for (browsers never send one with it), and a key is checked before any route runs."""
    access = settings.access
    middleware = []
    if access.cors_origins:
        # Clients that keep to one side of the canary split send its header too.
        extra = (settings.rollout.client_id_header,)
        middleware.append(
            Middleware(Cors, origins=access.cors_origins, on_refused=on_refused, extra_headers=extra)
        )
    if access.keys_on:
        middleware.append(Middleware(RequireKey, keys=KeyTable(access.keys), on_refused=on_refused))
    return middleware


class _GatewayApp(Starlette):
    """Starlette with the request-id middleware, then the server spans, around its outermost one
    (which answers the 500 of an unhandled exception): every answer carries X-Request-ID, and every
    request's span sees the status it was answered."""

    def __init__(self, traces: Traces, **options: Any) -> None:
        self.traces = traces
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        if self.traces.enabled:
            app = ServerSpans(app, self.traces, self.routes)
        return RequestIds(app)


def metrics_app(metrics: Metrics) -> Starlette:
    """/metrics alone, for GATEWAY_METRICS_PORT: a port the public Service does not publish."""

    async def page(request: Request) -> Response:
        return metrics_response(metrics)

    return Starlette(routes=[Route("/metrics", page, methods=["GET"])])


class _CountRequests:
    """Counts answers by route and status (unknown paths share one label: bounded cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in self.known_paths:
            route = path
        elif path.startswith("/static/"):
            route = "/static/{name}"
        elif path.startswith(("/v2/models/", "/v1/models/")):
            # Model names and versions are the client's words: one label per protocol.
            route = path[: len("/v2/models/")] + "*"
        else:
            route = "other"

        self.metrics.start_request()
        note_route(route)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_request(route, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
