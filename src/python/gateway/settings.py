"""The gateway's settings: read once from the environment by `parse_settings`, then passed around frozen.

`Settings` nests one small frozen value object per part of the gateway, the way httpx nests its
`Timeout` and `Limits`, and each part is handed only its own: `ServingTarget` (TF Serving, the
model and what one request may carry: `serving.ServingClient`, the routes), `Admission`
(`classify.Classifier`), `FetchPolicy` (`fetch.Fetcher`), `ConnectionLimits`
(`connection_limits`), `Listener` (`main`: where and how uvicorn serves), `Access` (`api_keys`,
`cors`: who may call, from which pages) and `DecodeOptions`
(`decode_options`: the routes' decode options, defaults and what clients may set).

Each default is written once, as the default of its value object's field. `VARIABLES` says which
field each environment variable sets and what it means; `python -m gateway --help` and the README's
table (`environment_table()`, held to the README by settings_test.py) are made from it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from api_keys import key_file
from api_keys.key_file import KeyEntry
from clothing_preproc import (
    AUTO_SIGNATURE,
    CLOTHING_LABELS,
    FAMILY_MODES,
    Limits,
    ModelDescription,
    PreprocessConfig,
    load_labels,
)
from clothing_preproc.signature import COURSE_MODEL_NAME
from clothing_settings import SettingError, SettingsParser, markdown_table
from clothing_settings.validators import http_url
from gateway import cors
from gateway.addresses import IPNetwork
from gateway.decode_options import OPTIONS, DecodeOptions, colour_hex, parse_colour, parse_per_request
from gateway.fetch import FetchPolicy
from gateway.versions import is_label

LOAD_BALANCING = ("pick_first", "round_robin")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# RFC 9110's token: what a header field's name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class ServingTarget:
    """TF Serving, the model the gateway calls there, and the images one request may carry."""

    address: str = "localhost:8500"
    model_name: str = COURSE_MODEL_NAME
    signature_name: str = AUTO_SIGNATURE
    input_name: str | None = None  # None: discovered from GetModelMetadata
    output_name: str | None = None
    labels: tuple[str, ...] = CLOTHING_LABELS
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    max_batch: int = 16  # images in one request, sent in one Predict call
    timeout: float = 20.0  # TF Serving's answer: waiting for a work slot plus the Predict call
    load_balancing: str = "pick_first"
    # What the export wrote beside the model; TF Serving's metadata does not carry it. The page
    # warns when it says the model is untrained (the demo model's scores mean nothing).
    description: ModelDescription | None = None

    @property
    def limits(self) -> Limits:
        """The bytes and pixels one image may have."""
        return self.preprocessing.limits


@dataclass(frozen=True)
class Admission:
    """How much work the gateway takes on at once (classify.Classifier)."""

    max_concurrency: int = 64  # classification requests in flight; more are answered 429
    max_active: int = 0  # requests decoding or waiting on TF Serving; 0: twice the threads
    preprocess_threads: int = 0  # 0: one per CPU

    @property
    def threads(self) -> int:
        return self.preprocess_threads or (os.cpu_count() or 1)

    @property
    def work_slots(self) -> int:
        """Requests working at once: enough to keep the decode threads and a Predict call busy."""
        return self.max_active or 2 * self.threads


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold (enforced by gateway.connection_limits)."""

    max_connections: int = 4096
    max_header_bytes: int = 16384
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 15.0
    idle_timeout: float = 5.0
    log_interval: float = 10.0


@dataclass(frozen=True)
class Listener:
    """Where and how the process serves (gateway.main)."""

    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on all interfaces
    port: int = 9696
    metrics_port: int = 0  # 0: /metrics on `port` with everything else
    shutdown_grace: float = 20.0
    keep_freed_mb: int = 64
    log_level: str = "info"


@dataclass(frozen=True)
class Rollout:
    """The canary split between two version labels (versions.CanarySplit); 0 percent: no split."""

    canary_percent: int = 0  # of the requests that pin no version, sent to canary_label
    stable_label: str = "stable"
    canary_label: str = "canary"
    client_id_header: str = "X-Client-ID"  # its value keeps a client on one side of the split


@dataclass(frozen=True)
class PredictionLog:
    """The opt-in prediction log (gateway.prediction_log, docs/prediction-log.md)."""

    destination: str = ""  # "": off; "-": standard output; else a file, appended to
    sample: float = 1.0  # fraction of classification requests logged
    full_url: bool = False  # image URLs whole; otherwise only their host
    buffer: int = 10_000  # lines waiting for the writer at most; more are dropped and counted


@dataclass(frozen=True)
class Tracing:
    """OpenTelemetry spans exported as OTLP over HTTP (gateway.tracing); no endpoint: off."""

    endpoint: str = ""  # "": off
    sample_ratio: float = 1.0  # of the traces this gateway starts (a client's sampled flag wins)
    service_name: str = "clothing-gateway"
    export_timeout: float = 10.0  # one export to the collector, and the flush at shutdown
    queue_size: int = 2048  # spans waiting for export at most; more are dropped


@dataclass(frozen=True)
class Access:
    """Who may call (gateway.api_keys) and which other origins' pages may (gateway.cors)."""

    keys_file: str = ""  # "": API keys off
    keys: tuple[KeyEntry, ...] = ()  # the file's entries, read at start
    cors_origins: tuple[str, ...] = ()  # (): CORS off; ("*",): any origin

    @property
    def keys_on(self) -> bool:
        return bool(self.keys_file)


@dataclass(frozen=True)
class GrpcListener:
    """KServe v2 over gRPC (gateway.kserve_v2_grpc): its port, and what one client may hold there."""

    port: int = 0  # 0: off
    max_message_bytes: int = 0  # 0: a full batch at the image byte limit (`message_limit`)
    max_streams: int = 16  # calls in progress on one connection (HTTP/2 concurrent streams)
    window_bytes: int = 1 << 20  # what a client may send ahead of the gateway, per call
    max_connections: int = 256
    min_ping_interval: float = 10.0  # a client pinging more often is disconnected
    max_idle: float = 300.0  # a connection without a call is closed after this
    max_age: float = 1800.0  # every connection is closed after this (its calls get the grace)

    def message_limit(self, max_batch: int, max_image_bytes: int) -> int:
        """Largest request message: the setting, or a full batch of images at the byte limit, each
        with its 4-byte length prefix, plus 64 KiB for the rest of the message."""
        if self.max_message_bytes:
            return self.max_message_bytes
        return min(max_batch * (max_image_bytes + 4) + 64 * 1024, (1 << 31) - 1)


@dataclass(frozen=True)
class Settings:
    serving: ServingTarget = field(default_factory=ServingTarget)
    admission: Admission = field(default_factory=Admission)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    listener: Listener = field(default_factory=Listener)
    grpc: GrpcListener = field(default_factory=GrpcListener)
    access: Access = field(default_factory=Access)
    decoding: DecodeOptions = field(default_factory=DecodeOptions)
    rollout: Rollout = field(default_factory=Rollout)
    prediction_log: PredictionLog = field(default_factory=PredictionLog)
    tracing: Tracing = field(default_factory=Tracing)


@dataclass(frozen=True)
class Variable:
    """One environment variable: the field it sets (`value`, read from a `Settings`) and its meaning.
    Its default is that field's value in `Settings()`; `shown` words it where the value would not."""

    name: str
    value: Callable[[Settings], object]
    meaning: str
    shown: str | None = None

    def default(self) -> str:
        """The default as the README and --help show it."""
        if self.shown is not None:
            return self.shown
        value = self.value(Settings())
        if value is None or value in ("", ()):
            return "(empty)"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return f"`{value}`"


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "TF_SERVING_HOST",
        lambda s: s.serving.address,
        "TF Serving's gRPC address, host:port (the course's name)",
    ),
    Variable(
        "GATEWAY_MODEL_NAME",
        lambda s: s.serving.model_name,
        "model name sent in every request's ModelSpec",
    ),
    Variable(
        "GATEWAY_SIGNATURE",
        lambda s: s.serving.signature_name,
        "signature to call; auto: the model's `pixels` signature if it has one (uint8 pixels, a quarter "
        "of the bytes, normalised by the model), else serving_default (float32, normalised here)",
    ),
    Variable(
        "GATEWAY_INPUT_NAME",
        lambda s: s.serving.input_name,
        "input tensor name; empty: discovered from GetModelMetadata",
    ),
    Variable(
        "GATEWAY_OUTPUT_NAME",
        lambda s: s.serving.output_name,
        "output tensor name; empty: discovered from GetModelMetadata",
    ),
    Variable(
        "GATEWAY_PREPROCESSING",
        lambda s: s.serving.preprocessing.family,
        "keras.applications family whose preprocess_input to apply",
    ),
    Variable(
        "GATEWAY_IMAGE_SIZE",
        lambda s: s.serving.preprocessing.target_size[0],
        "resize target (height=width) when the signature does not fix it",
    ),
    Variable(
        "GATEWAY_LABELS",
        lambda s: ",".join(s.serving.labels),
        "class names in output order, comma-separated",
        shown="the ten course classes",
    ),
    Variable(
        "GATEWAY_LABELS_FILE",
        lambda s: None,
        "file with the class names (JSON list or one per line); wins over GATEWAY_LABELS",
    ),
    Variable(
        "GATEWAY_MODEL_DESCRIPTION",
        lambda s: None,
        "the served model's description file, as export writes it (`<version>/assets.extra/"
        "clothing_model.json`); answers then say whether the model is trained, and the page warns "
        "when it is not",
    ),
    Variable(
        "GATEWAY_DRAFT_DECODE",
        lambda s: str(s.decoding.defaults.draft).lower(),
        "decode JPEGs at 1/2, 1/4 or 1/8 scale (still at least the model's input size): about 3× less "
        "CPU on phone photos, pixels a few levels off Keras'; false: Keras-exact",
    ),
    Variable(
        "GATEWAY_EXIF_ORIENTATION",
        lambda s: str(s.decoding.defaults.exif_orientation).lower(),
        "turn photos upright by their EXIF Orientation tag, as phones show them; false: as Keras, which "
        "ignores the tag (a portrait photo reaches the model sideways)",
    ),
    Variable(
        "GATEWAY_ALPHA_BACKGROUND",
        lambda s: s.decoding.defaults.background and colour_hex(s.decoding.defaults.background),
        "colour to composite transparent images onto, `r,g,b` or `#rrggbb`; empty: as Keras, which drops "
        "the alpha channel",
    ),
    Variable(
        "GATEWAY_REQUEST_OPTIONS",
        lambda s: ",".join(s.decoding.per_request) or "none",
        "which of draft, exif_orientation, background a client may set per request (query or v2 "
        "parameters), comma-separated, or all, or none; others are refused with 400",
    ),
    Variable("GATEWAY_HOST", lambda s: s.listener.host, "address to listen on"),
    Variable("GATEWAY_PORT", lambda s: s.listener.port, "port to listen on"),
    Variable(
        "GATEWAY_METRICS_PORT",
        lambda s: s.listener.metrics_port,
        "port serving /metrics alone, on GATEWAY_HOST, so a public Service need not publish it; "
        "0: /metrics is on GATEWAY_PORT with everything else",
    ),
    Variable(
        "GATEWAY_GRPC_PORT",
        lambda s: s.grpc.port,
        "port serving KServe's v2 protocol over gRPC (`inference.GRPCInferenceService`), on "
        "GATEWAY_HOST; at most GATEWAY_MAX_CONCURRENCY + 8 calls at once (more: RESOURCE_EXHAUSTED); "
        "0: off",
    ),
    Variable(
        "GATEWAY_GRPC_MAX_MESSAGE_BYTES",
        lambda s: s.grpc.max_message_bytes,
        "largest gRPC request message, bytes (more: RESOURCE_EXHAUSTED, before it is read); 0: a full "
        "batch at the image byte limit, GATEWAY_MAX_BATCH × (GATEWAY_MAX_IMAGE_BYTES + 4) + 64 KiB",
    ),
    Variable(
        "GATEWAY_GRPC_MAX_STREAMS",
        lambda s: s.grpc.max_streams,
        "gRPC calls one connection may have in progress at once (HTTP/2 concurrent streams)",
    ),
    Variable(
        "GATEWAY_GRPC_WINDOW_BYTES",
        lambda s: s.grpc.window_bytes,
        "HTTP/2 flow-control window of a gRPC call, bytes: what a client may send before the gateway "
        "reads it, and so at most what a refused message costs; fixed (no BDP growth), so at 20 ms "
        "round trip 1 MiB moves about 50 MB/s",
    ),
    Variable(
        "GATEWAY_GRPC_MAX_CONNECTIONS",
        lambda s: s.grpc.max_connections,
        "open gRPC connections; more are closed as they arrive",
    ),
    Variable(
        "GATEWAY_GRPC_MIN_PING_INTERVAL",
        lambda s: s.grpc.min_ping_interval,
        "seconds a gRPC client must leave between keepalive pings; one that pings more often is "
        "disconnected (GOAWAY too_many_pings)",
    ),
    Variable(
        "GATEWAY_GRPC_MAX_IDLE",
        lambda s: s.grpc.max_idle,
        "seconds a gRPC connection may stay open without a call; then closed (GOAWAY: a client "
        "reconnects on its next call)",
    ),
    Variable(
        "GATEWAY_GRPC_MAX_AGE",
        lambda s: s.grpc.max_age,
        "seconds a gRPC connection lives at most; then closed (GOAWAY), its calls in progress given "
        "GATEWAY_SHUTDOWN_GRACE to finish",
    ),
    Variable(
        "GATEWAY_API_KEYS_FILE",
        lambda s: s.access.keys_file,
        "file of API keys (ids and SHA-256 digests, written by `./pants api-keys`), read at start; every "
        "route but the page, /healthz, /readyz, /openapi.json and /v2/health/* then needs a key "
        "(`Authorization: Bearer` or `X-API-Key`); empty: no keys",
    ),
    Variable(
        "GATEWAY_CORS_ORIGINS",
        lambda s: ",".join(s.access.cors_origins),
        "origins (`scheme://host[:port]`, comma-separated) whose pages may call the gateway from a "
        "browser, or `*` for any; empty: only the gateway's own page",
    ),
    Variable(
        "GATEWAY_PREDICT_TIMEOUT",
        lambda s: s.serving.timeout,
        "deadline for TF Serving's answer, seconds: waiting for a work slot plus the Predict call",
    ),
    Variable(
        "GATEWAY_MAX_CONCURRENCY",
        lambda s: s.admission.max_concurrency,
        "classification requests in flight; more are answered 429",
    ),
    Variable(
        "GATEWAY_MAX_ACTIVE",
        lambda s: s.admission.max_active,
        "requests decoding or waiting on TF Serving at once; the others queue in arrival order; "
        "0: twice the preprocessing threads",
    ),
    Variable(
        "GATEWAY_MAX_BATCH",
        lambda s: s.serving.max_batch,
        "images in one batch request (one Predict call)",
    ),
    Variable(
        "GATEWAY_MAX_IMAGE_BYTES",
        lambda s: s.serving.limits.max_bytes,
        "largest image accepted, bytes (uploads and URLs)",
    ),
    Variable(
        "GATEWAY_MAX_IMAGE_PIXELS",
        lambda s: s.serving.limits.max_pixels,
        "largest image accepted, width × height",
    ),
    Variable(
        "GATEWAY_PREPROCESS_THREADS",
        lambda s: s.admission.preprocess_threads,
        "threads decoding images off the event loop; 0: one per CPU",
    ),
    Variable(
        "GATEWAY_FETCH_CONNECT_TIMEOUT",
        lambda s: s.fetch.connect_timeout,
        "image URL connect timeout, seconds",
    ),
    Variable(
        "GATEWAY_FETCH_READ_TIMEOUT",
        lambda s: s.fetch.read_timeout,
        "image URL timeout between received bytes, seconds",
    ),
    Variable(
        "GATEWAY_FETCH_TOTAL_TIMEOUT",
        lambda s: s.fetch.total_timeout,
        "image URL total time including redirects, seconds",
    ),
    Variable(
        "GATEWAY_FETCH_MAX_REDIRECTS",
        lambda s: s.fetch.max_redirects,
        "redirects followed per image URL (each one re-checked)",
    ),
    Variable(
        "GATEWAY_DNS_THREADS",
        lambda s: s.fetch.lookups.threads,
        "threads resolving image URL host names, used for nothing else (the OS resolver blocks one "
        "per lookup)",
    ),
    Variable(
        "GATEWAY_DNS_TIMEOUT",
        lambda s: s.fetch.lookups.timeout,
        "longest wait for one host name lookup, seconds, queueing included (then 504); at most "
        "`GATEWAY_FETCH_CONNECT_TIMEOUT`",
    ),
    Variable(
        "GATEWAY_DNS_MAX_PER_DOMAIN",
        lambda s: s.fetch.lookups.per_domain,
        "lookups running at once for names under one domain, counting those whose request already gave "
        "up; more wait their turn: a domain whose DNS never answers holds at most this many threads",
    ),
    Variable(
        "GATEWAY_FETCH_ALLOW_NETWORKS",
        lambda s: s.fetch.allow_networks,
        "comma-separated CIDRs image URLs may reach although private (development only, e.g. 127.0.0.0/8)",
    ),
    Variable(
        "GATEWAY_GRPC_LOAD_BALANCING",
        lambda s: s.serving.load_balancing,
        "pick_first, or round_robin over all DNS addresses (headless Service)",
    ),
    Variable(
        "GATEWAY_CANARY_PERCENT",
        lambda s: s.rollout.canary_percent,
        "percent (0..100) of the requests that pin no version (`?version=`, `?label=`, a versioned path) "
        "sent to the version labelled GATEWAY_CANARY_LABEL, the others to GATEWAY_STABLE_LABEL's; "
        "0: no split, TF Serving's latest version answers",
    ),
    Variable(
        "GATEWAY_STABLE_LABEL",
        lambda s: s.rollout.stable_label,
        "TF Serving version label of the stable side of the canary split",
    ),
    Variable(
        "GATEWAY_CANARY_LABEL",
        lambda s: s.rollout.canary_label,
        "TF Serving version label of the canary side of the canary split",
    ),
    Variable(
        "GATEWAY_CLIENT_ID_HEADER",
        lambda s: s.rollout.client_id_header,
        "request header naming the client: requests with the same value always land on the same side "
        "of the canary split (without it, each request's side is random)",
    ),
    Variable(
        "GATEWAY_SHUTDOWN_GRACE",
        lambda s: s.listener.shutdown_grace,
        "seconds in-flight requests get to finish on SIGTERM",
    ),
    Variable(
        "GATEWAY_MAX_CONNECTIONS",
        lambda s: s.connections.max_connections,
        "open client connections; past it a new one closes the oldest connection that has no request "
        "being answered (idle or still sending its head), or gets 503 if none has; lowered at start-up "
        "to fit the process's descriptor limit",
    ),
    Variable(
        "GATEWAY_MAX_HEADER_BYTES",
        lambda s: s.connections.max_header_bytes,
        "largest request line plus headers, bytes; more: 431",
    ),
    Variable(
        "GATEWAY_MAX_HEADERS",
        lambda s: s.connections.max_headers,
        "most header fields in one request; more: 431",
    ),
    Variable(
        "GATEWAY_HEADER_TIMEOUT",
        lambda s: s.connections.header_timeout,
        "seconds from a request's first byte to the end of its headers; later: 408 and closed",
    ),
    Variable(
        "GATEWAY_BODY_TIMEOUT",
        lambda s: s.connections.body_timeout,
        "seconds a request body may pause between bytes (while the gateway is reading it), and an "
        "answer may wait for the client to read it; longer: 408 and closed, or closed",
    ),
    Variable(
        "GATEWAY_IDLE_TIMEOUT",
        lambda s: s.connections.idle_timeout,
        "seconds a connection may stay open without a request, before the first one or between two; "
        "then closed",
    ),
    Variable(
        "GATEWAY_CONNECTION_LOG_INTERVAL",
        lambda s: s.connections.log_interval,
        "seconds between log lines that count refused and timed-out connections (one line per interval, "
        "never one per connection)",
    ),
    Variable(
        "GATEWAY_KEEP_FREED_MB",
        lambda s: s.listener.keep_freed_mb,
        "freed memory kept for the next requests, MiB per allocator arena (glibc), given back after "
        "10 s without requests; 0: glibc's default, which hands it back and faults it in again per image",
    ),
    Variable(
        "GATEWAY_LOG_LEVEL",
        lambda s: s.listener.log_level,
        "uvicorn log level: critical, error, warning, info, debug",
    ),
    Variable(
        "GATEWAY_PREDICTION_LOG",
        lambda s: s.prediction_log.destination,
        "the prediction log, one JSON line per classified image (docs/prediction-log.md): a file, "
        "opened for appending at start; `-`: standard output; empty: off",
    ),
    Variable(
        "GATEWAY_PREDICTION_LOG_SAMPLE",
        lambda s: s.prediction_log.sample,
        "fraction of classification requests whose images are logged, 0 to 1 (a batch is logged "
        "whole or not at all)",
    ),
    Variable(
        "GATEWAY_PREDICTION_LOG_FULL_URL",
        lambda s: str(s.prediction_log.full_url).lower(),
        "log image URLs whole (they may carry tokens or personal data); false: only their host",
    ),
    Variable(
        "GATEWAY_PREDICTION_LOG_BUFFER",
        lambda s: s.prediction_log.buffer,
        "prediction log lines waiting to be written at most; past it a line is dropped and counted in "
        "`gateway_prediction_log_dropped_total`, never a request delayed",
    ),
    Variable(
        "GATEWAY_OTLP_ENDPOINT",
        lambda s: s.tracing.endpoint,
        "OpenTelemetry collector receiving the gateway's spans as OTLP over HTTP, "
        "`http(s)://host:port[/path]` (no path: `/v1/traces`); empty: tracing off, at no cost",
    ),
    Variable(
        "GATEWAY_TRACE_SAMPLE_RATIO",
        lambda s: s.tracing.sample_ratio,
        "fraction (0..1) of the traces the gateway starts that are recorded; a request carrying a "
        "`traceparent` follows its sampled flag",
    ),
    Variable(
        "GATEWAY_SERVICE_NAME",
        lambda s: s.tracing.service_name,
        "the spans' `service.name` (letters, digits, `.`, `_`, `-`)",
    ),
    Variable(
        "GATEWAY_OTLP_TIMEOUT",
        lambda s: s.tracing.export_timeout,
        "seconds one export of spans to the collector may take, retries included (on a thread of its "
        "own, never a request's); also the longest flush at shutdown",
    ),
    Variable(
        "GATEWAY_TRACE_QUEUE",
        lambda s: s.tracing.queue_size,
        "spans waiting for export at most; past it (a collector down or slow) new spans are dropped, "
        "never a request delayed",
    ),
)

ENVIRONMENT_TABLE_HEADER = ("variable", "default", "meaning")


def environment_table() -> str:
    """The README's table of the gateway's environment variables."""
    return markdown_table(
        ENVIRONMENT_TABLE_HEADER, [(f"`{v.name}`", v.default(), v.meaning) for v in VARIABLES]
    )


def parser() -> argparse.ArgumentParser:
    rows = "\n".join(
        f"  {v.name:<31} {v.meaning} (default: {v.default().strip('`()')})"
        for v in VARIABLES
    )
    return SettingsParser(
        prog="gateway",
        description="The clothing classifier's HTTP gateway: image URL or upload -> TF Serving -> scores. "
        "It is configured by environment variables, read once at startup.",
        epilog=f"environment:\n{rows}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """The settings from the command line (only --help) and the environment (unset or empty: the
    default); `SettingError` names the variable and the problem. `--help` prints and exits 0."""
    parser().parse_args(list(argv))
    env = _Env(environ)
    defaults = Settings()
    return Settings(
        serving=_serving(env, defaults.serving),
        admission=replace(
            defaults.admission,
            **env.given(
                max_concurrency=env.integer("GATEWAY_MAX_CONCURRENCY", 1, 100_000),
                max_active=env.integer("GATEWAY_MAX_ACTIVE", 0, 100_000),
                preprocess_threads=env.integer("GATEWAY_PREPROCESS_THREADS", 0, 1024),
            ),
        ),
        fetch=_fetch(env, defaults.fetch),
        connections=replace(
            defaults.connections,
            **env.given(
                max_connections=env.integer("GATEWAY_MAX_CONNECTIONS", 1, 1_000_000),
                max_header_bytes=env.integer("GATEWAY_MAX_HEADER_BYTES", 1024, 1 << 20),
                max_headers=env.integer("GATEWAY_MAX_HEADERS", 1, 10_000),
                header_timeout=env.seconds("GATEWAY_HEADER_TIMEOUT"),
                body_timeout=env.seconds("GATEWAY_BODY_TIMEOUT"),
                idle_timeout=env.seconds("GATEWAY_IDLE_TIMEOUT"),
                log_interval=env.seconds("GATEWAY_CONNECTION_LOG_INTERVAL"),
            ),
        ),
        listener=_listener(env, defaults.listener),
        grpc=_grpc(env, defaults.grpc, _listener(env, defaults.listener)),
        access=_access(env),
        rollout=_rollout(env, defaults.rollout),
        decoding=_decoding(env, defaults.decoding),
        prediction_log=replace(
            defaults.prediction_log,
            **env.given(
                destination=env.text("GATEWAY_PREDICTION_LOG") or None,
                sample=env.fraction("GATEWAY_PREDICTION_LOG_SAMPLE"),
                full_url=env.boolean("GATEWAY_PREDICTION_LOG_FULL_URL"),
                buffer=env.integer("GATEWAY_PREDICTION_LOG_BUFFER", 1, 10_000_000),
            ),
        ),
        tracing=_tracing(env, defaults.tracing),
    )


def _serving(env: _Env, default: ServingTarget) -> ServingTarget:
    labels_file = env.text("GATEWAY_LABELS_FILE")
    labels: tuple[str, ...] | None = None
    if labels_file:
        try:
            labels = load_labels(Path(labels_file))
        except (OSError, ValueError) as e:
            raise SettingError("GATEWAY_LABELS_FILE", str(e)) from None
    elif env.text("GATEWAY_LABELS"):
        labels = tuple(x.strip() for x in env.text("GATEWAY_LABELS").split(",") if x.strip())
        if not labels or len(set(labels)) != len(labels):
            raise SettingError(
                "GATEWAY_LABELS", "GATEWAY_LABELS must list distinct class names, comma-separated"
            )
    description: ModelDescription | None = None
    description_file = env.text("GATEWAY_MODEL_DESCRIPTION")
    if description_file:
        try:
            description = ModelDescription.from_json(Path(description_file).read_text(encoding="utf-8"))
        except OSError as e:
            raise SettingError(
                "GATEWAY_MODEL_DESCRIPTION", f"cannot read {description_file}: {e.strerror}"
            ) from None
        except ValueError as e:
            raise SettingError("GATEWAY_MODEL_DESCRIPTION", f"{description_file}: {e}") from None
    family = env.choice("GATEWAY_PREPROCESSING", sorted(FAMILY_MODES))
    size = env.integer("GATEWAY_IMAGE_SIZE", 1, 8192)
    preprocessing = default.preprocessing
    preprocessing = replace(
        preprocessing,
        **env.given(
            family=family,
            target_size=(size, size) if size is not None else None,
            limits=replace(
                preprocessing.limits,
                **env.given(
                    max_bytes=env.integer("GATEWAY_MAX_IMAGE_BYTES", 1, 1 << 30),
                    max_pixels=env.integer("GATEWAY_MAX_IMAGE_PIXELS", 1, 1 << 31),
                ),
            ),
        ),
    )
    address = env.text("TF_SERVING_HOST")
    if any(c.isspace() for c in address):
        raise SettingError("TF_SERVING_HOST", f"TF_SERVING_HOST={address!r} is not a host:port")
    return replace(
        default,
        preprocessing=preprocessing,
        **env.given(
            address=address or None,
            model_name=env.text("GATEWAY_MODEL_NAME") or None,
            signature_name=env.text("GATEWAY_SIGNATURE") or None,
            input_name=env.text("GATEWAY_INPUT_NAME") or None,
            output_name=env.text("GATEWAY_OUTPUT_NAME") or None,
            labels=labels,
            description=description,
            max_batch=env.integer("GATEWAY_MAX_BATCH", 1, 1024),
            timeout=env.seconds("GATEWAY_PREDICT_TIMEOUT"),
            load_balancing=env.choice("GATEWAY_GRPC_LOAD_BALANCING", LOAD_BALANCING),
        ),
    )


def _fetch(env: _Env, default: FetchPolicy) -> FetchPolicy:
    connect = env.seconds("GATEWAY_FETCH_CONNECT_TIMEOUT") or default.connect_timeout
    lookups = replace(
        default.lookups,
        **env.given(
            threads=env.integer("GATEWAY_DNS_THREADS", 1, 1024),
            timeout=env.seconds("GATEWAY_DNS_TIMEOUT"),
            per_domain=env.integer("GATEWAY_DNS_MAX_PER_DOMAIN", 1, 1024),
        ),
    )
    return replace(
        default,
        connect_timeout=connect,
        # A lookup never outlasts the fetch's connect timeout.
        lookups=replace(lookups, timeout=min(lookups.timeout, connect)),
        **env.given(
            read_timeout=env.seconds("GATEWAY_FETCH_READ_TIMEOUT"),
            total_timeout=env.seconds("GATEWAY_FETCH_TOTAL_TIMEOUT"),
            max_redirects=env.integer("GATEWAY_FETCH_MAX_REDIRECTS", 0, 20),
            allow_networks=env.networks("GATEWAY_FETCH_ALLOW_NETWORKS"),
        ),
    )


def _decoding(env: _Env, default: DecodeOptions) -> DecodeOptions:
    background = env.text("GATEWAY_ALPHA_BACKGROUND")
    colour = parse_colour(background) if background and background.lower() != "none" else None
    if background and background.lower() != "none" and colour is None:
        raise SettingError(
            "GATEWAY_ALPHA_BACKGROUND",
            f"GATEWAY_ALPHA_BACKGROUND={background!r} is not a colour like 255,255,255 or #ffffff",
        )
    per_request_text = env.text("GATEWAY_REQUEST_OPTIONS")
    per_request = parse_per_request(per_request_text) if per_request_text else None
    if per_request_text and per_request is None:
        raise SettingError(
            "GATEWAY_REQUEST_OPTIONS",
            f"GATEWAY_REQUEST_OPTIONS={per_request_text!r}: all, none, or some of {', '.join(OPTIONS)}, "
            "comma-separated",
        )
    defaults = replace(
        default.defaults,
        **env.given(
            draft=env.boolean("GATEWAY_DRAFT_DECODE"),
            exif_orientation=env.boolean("GATEWAY_EXIF_ORIENTATION"),
            background=colour,
        ),
    )
    if per_request is None:
        per_request = default.per_request
    return DecodeOptions(defaults=defaults, per_request=per_request)


def _access(env: _Env) -> Access:
    name = "GATEWAY_API_KEYS_FILE"
    keys_file = env.text(name)
    keys: tuple[KeyEntry, ...] = ()
    if keys_file:
        try:
            keys = key_file.read(Path(keys_file))
        except OSError as e:
            raise SettingError(name, f"{name}: cannot read {keys_file}: {e.strerror}") from None
        except key_file.KeyFileError as e:
            raise SettingError(name, f"{name}: {keys_file} {e}") from None
        if not keys:
            raise SettingError(
                name, f"{name}: {keys_file} holds no keys (`./pants api-keys -- new ID` adds one)"
            )
    try:
        origins = cors.parse_origins(env.text("GATEWAY_CORS_ORIGINS"))
    except ValueError as e:
        raise SettingError("GATEWAY_CORS_ORIGINS", f"GATEWAY_CORS_ORIGINS: {e}") from None
    return Access(keys_file=keys_file, keys=keys, cors_origins=origins)


def _tracing(env: _Env, default: Tracing) -> Tracing:
    endpoint = env.text("GATEWAY_OTLP_ENDPOINT")
    if endpoint:
        try:
            http_url(endpoint)
        except argparse.ArgumentTypeError as e:
            raise SettingError("GATEWAY_OTLP_ENDPOINT", f"GATEWAY_OTLP_ENDPOINT={e}") from None
    service = env.text("GATEWAY_SERVICE_NAME")
    if service and not _SERVICE_NAME.fullmatch(service):
        raise SettingError(
            "GATEWAY_SERVICE_NAME",
            f"GATEWAY_SERVICE_NAME={service!r}: up to 100 letters, digits, '.', '_' or '-'",
        )
    return replace(
        default,
        **env.given(
            endpoint=endpoint or None,
            sample_ratio=env.fraction("GATEWAY_TRACE_SAMPLE_RATIO"),
            service_name=service or None,
            export_timeout=env.seconds("GATEWAY_OTLP_TIMEOUT"),
            queue_size=env.integer("GATEWAY_TRACE_QUEUE", 1, 1_000_000),
        ),
    )


def _listener(env: _Env, default: Listener) -> Listener:
    listener = replace(
        default,
        **env.given(
            host=env.text("GATEWAY_HOST") or None,
            port=env.integer("GATEWAY_PORT", 0, 65535),
            metrics_port=env.integer("GATEWAY_METRICS_PORT", 0, 65535),
            shutdown_grace=env.seconds("GATEWAY_SHUTDOWN_GRACE"),
            keep_freed_mb=env.integer("GATEWAY_KEEP_FREED_MB", 0, 2047),
            log_level=env.choice("GATEWAY_LOG_LEVEL", LOG_LEVELS, lower=True),
        ),
    )
    if listener.metrics_port and listener.metrics_port == listener.port:
        raise SettingError(
            "GATEWAY_METRICS_PORT",
            f"GATEWAY_METRICS_PORT={listener.metrics_port} is GATEWAY_PORT; 0 puts /metrics there",
        )
    return listener


def _rollout(env: _Env, default: Rollout) -> Rollout:
    labels = {}
    for name in ("GATEWAY_STABLE_LABEL", "GATEWAY_CANARY_LABEL"):
        label = env.text(name)
        if label and not is_label(label):
            raise SettingError(
                name,
                f"{name}={label[:80]!r} is not a version label (letters, digits, '_', '.', '-'; at most 64)",
            )
        labels[name] = label or None
    header = env.text("GATEWAY_CLIENT_ID_HEADER")
    if header and not _HEADER_NAME.fullmatch(header):
        raise SettingError(
            "GATEWAY_CLIENT_ID_HEADER", f"GATEWAY_CLIENT_ID_HEADER={header[:80]!r} is not an HTTP header name"
        )
    rollout = replace(
        default,
        **env.given(
            canary_percent=env.integer("GATEWAY_CANARY_PERCENT", 0, 100),
            stable_label=labels["GATEWAY_STABLE_LABEL"],
            canary_label=labels["GATEWAY_CANARY_LABEL"],
            client_id_header=header or None,
        ),
    )
    if rollout.stable_label == rollout.canary_label:
        raise SettingError(
            "GATEWAY_CANARY_LABEL",
            f"GATEWAY_CANARY_LABEL={rollout.canary_label!r} is GATEWAY_STABLE_LABEL too; "
            "the split needs two labels",
        )
    return rollout



def _grpc(env: _Env, default: GrpcListener, listener: Listener) -> GrpcListener:
    grpc = replace(
        default,
        **env.given(
            port=env.integer("GATEWAY_GRPC_PORT", 0, 65535),
            max_message_bytes=env.integer("GATEWAY_GRPC_MAX_MESSAGE_BYTES", 0, (1 << 31) - 1),
            max_streams=env.integer("GATEWAY_GRPC_MAX_STREAMS", 1, 10_000),
            window_bytes=env.integer("GATEWAY_GRPC_WINDOW_BYTES", 65535, (1 << 31) - 1),
            max_connections=env.integer("GATEWAY_GRPC_MAX_CONNECTIONS", 1, 1_000_000),
            min_ping_interval=env.seconds("GATEWAY_GRPC_MIN_PING_INTERVAL"),
            max_idle=env.seconds("GATEWAY_GRPC_MAX_IDLE"),
            max_age=env.seconds("GATEWAY_GRPC_MAX_AGE"),
        ),
    )
    if 0 < grpc.max_message_bytes < 1024:
        raise SettingError(
            "GATEWAY_GRPC_MAX_MESSAGE_BYTES",
            f"GATEWAY_GRPC_MAX_MESSAGE_BYTES={grpc.max_message_bytes} is below 1024 (0: a full batch)",
        )
    for name, port in (("GATEWAY_PORT", listener.port), ("GATEWAY_METRICS_PORT", listener.metrics_port)):
        if grpc.port and grpc.port == port:
            raise SettingError("GATEWAY_GRPC_PORT", f"GATEWAY_GRPC_PORT={grpc.port} is {name}'s port")
    return grpc


class _Env:
    """The variables as given: each reader returns None when its variable is unset or empty (the
    default applies), the value when it is usable, and raises `SettingError` otherwise."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    @staticmethod
    def given(**values: Any) -> dict[str, Any]:
        """The fields whose variable was given, for `dataclasses.replace` (typed by the readers)."""
        return {name: value for name, value in values.items() if value is not None}

    def text(self, name: str) -> str:
        return self._environ.get(name, "").strip()

    def integer(self, name: str, low: int, high: int) -> int | None:
        raw = self.text(name)
        if not raw:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise SettingError(name, f"{name}={raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise SettingError(name, f"{name}={value} is outside {low}..{high}")
        return value

    def seconds(self, name: str) -> float | None:
        raw = self.text(name)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(name, f"{name}={raw!r} is not a number of seconds") from None
        if not 0 < value <= 3600:
            raise SettingError(name, f"{name}={value} must be more than 0 and at most 3600 seconds")
        return value

    def choice(self, name: str, choices: Sequence[str], *, lower: bool = False) -> str | None:
        raw = self.text(name)
        value = raw.lower() if lower else raw
        if not value:
            return None
        if value not in choices:
            raise SettingError(name, f"{name}={value!r}: one of {', '.join(choices)}")
        return value

    def fraction(self, name: str) -> float | None:
        raw = self.text(name)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(name, f"{name}={raw!r} is not a number from 0 to 1") from None
        if not 0 <= value <= 1:  # NaN fails this too
            raise SettingError(name, f"{name}={value} is outside 0..1")
        return value

    def boolean(self, name: str) -> bool | None:
        raw = self.text(name).lower()
        if not raw:
            return None
        if raw not in ("true", "false", "1", "0"):
            raise SettingError(name, f"{name}={raw!r}: true or false")
        return raw in ("true", "1")

    def networks(self, name: str) -> tuple[IPNetwork, ...] | None:
        out = []
        for part in self.text(name).split(","):
            if part.strip():
                try:
                    out.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError:
                    problem = f"{name}: {part.strip()!r} is not a CIDR like 10.0.0.0/8"
                    raise SettingError(name, problem) from None
        return tuple(out) or None
