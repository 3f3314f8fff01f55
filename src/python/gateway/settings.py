"""The gateway's settings: read once from the environment in `main()`, then passed around frozen.

Every variable is listed in `ENVIRONMENT` (name, default, meaning); the README's "Settings" table
and `python -m gateway --help` are both made from it, so they cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clothing_preproc import (
    AUTO_SIGNATURE,
    CLOTHING_LABELS,
    FAMILY_MODES,
    Limits,
    PreprocessConfig,
    load_labels,
)
from gateway.name_lookup import LookupLimits

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (variable, default, meaning). Defaults are strings exactly as they would be written in the env.
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("TF_SERVING_HOST", "localhost:8500", "TF Serving's gRPC address, host:port (the course's name)"),
    ("GATEWAY_MODEL_NAME", "clothing-model", "model name sent in every request's ModelSpec"),
    (
        "GATEWAY_SIGNATURE",
        AUTO_SIGNATURE,
        "signature to call; auto: the model's `pixels` signature if it has one (uint8 pixels, a quarter "
        "of the bytes, normalised by the model), else serving_default (float32, normalised here)",
    ),
    ("GATEWAY_INPUT_NAME", "", "input tensor name; empty: discovered from GetModelMetadata"),
    ("GATEWAY_OUTPUT_NAME", "", "output tensor name; empty: discovered from GetModelMetadata"),
    ("GATEWAY_PREPROCESSING", "xception", "keras.applications family whose preprocess_input to apply"),
    ("GATEWAY_IMAGE_SIZE", "299", "resize target (height=width) when the signature does not fix it"),
    ("GATEWAY_LABELS", ",".join(CLOTHING_LABELS), "class names in output order, comma-separated"),
    (
        "GATEWAY_LABELS_FILE",
        "",
        "file with the class names (JSON list or one per line); wins over GATEWAY_LABELS",
    ),
    ("GATEWAY_HOST", "0.0.0.0", "address to listen on"),  # noqa: S104 - a service listens on all interfaces
    ("GATEWAY_PORT", "9696", "port to listen on"),
    (
        "GATEWAY_PREDICT_TIMEOUT",
        "20",
        "deadline for TF Serving's answer, seconds: waiting for a work slot plus the Predict call",
    ),
    ("GATEWAY_MAX_CONCURRENCY", "64", "classification requests in flight; more are answered 429"),
    (
        "GATEWAY_MAX_ACTIVE",
        "0",
        "requests decoding or waiting on TF Serving at once; the others queue in arrival order; "
        "0: twice the preprocessing threads",
    ),
    ("GATEWAY_MAX_BATCH", "16", "images in one batch request (one Predict call)"),
    ("GATEWAY_MAX_IMAGE_BYTES", str(20 * 1024 * 1024), "largest image accepted, bytes (uploads and URLs)"),
    ("GATEWAY_MAX_IMAGE_PIXELS", "50000000", "largest image accepted, width × height"),
    ("GATEWAY_PREPROCESS_THREADS", "0", "threads decoding images off the event loop; 0: one per CPU"),
    ("GATEWAY_FETCH_CONNECT_TIMEOUT", "5", "image URL connect timeout, seconds"),
    ("GATEWAY_FETCH_READ_TIMEOUT", "10", "image URL timeout between received bytes, seconds"),
    ("GATEWAY_FETCH_TOTAL_TIMEOUT", "15", "image URL total time including redirects, seconds"),
    ("GATEWAY_FETCH_MAX_REDIRECTS", "3", "redirects followed per image URL (each one re-checked)"),
    (
        "GATEWAY_DNS_THREADS",
        "32",
        "threads resolving image URL host names, used for nothing else (the OS resolver blocks one "
        "per lookup)",
    ),
    (
        "GATEWAY_DNS_TIMEOUT",
        "3",
        "longest wait for one host name lookup, seconds, queueing included (then 504); at most "
        "GATEWAY_FETCH_CONNECT_TIMEOUT",
    ),
    (
        "GATEWAY_DNS_MAX_PER_DOMAIN",
        "2",
        "lookups running at once for names under one domain, counting those whose request already gave "
        "up; more wait their turn: a domain whose DNS never answers holds at most this many threads",
    ),
    (
        "GATEWAY_FETCH_ALLOW_NETWORKS",
        "",
        "comma-separated CIDRs image URLs may reach although private (development only, e.g. 127.0.0.0/8)",
    ),
    (
        "GATEWAY_GRPC_LOAD_BALANCING",
        "pick_first",
        "pick_first, or round_robin over all DNS addresses (headless Service)",
    ),
    ("GATEWAY_SHUTDOWN_GRACE", "20", "seconds in-flight requests get to finish on SIGTERM"),
    (
        "GATEWAY_MAX_CONNECTIONS",
        "4096",
        "open client connections; past it a new one closes the oldest connection that has no request "
        "being answered (idle or still sending its head), or gets 503 if none has; lowered at start-up "
        "to fit the process's descriptor limit",
    ),
    ("GATEWAY_MAX_HEADER_BYTES", "16384", "largest request line plus headers, bytes; more: 431"),
    ("GATEWAY_MAX_HEADERS", "100", "most header fields in one request; more: 431"),
    (
        "GATEWAY_HEADER_TIMEOUT",
        "10",
        "seconds from a request's first byte to the end of its headers; later: 408 and closed",
    ),
    (
        "GATEWAY_BODY_TIMEOUT",
        "15",
        "seconds a request body may pause between bytes (while the gateway is reading it), and an "
        "answer may wait for the client to read it; longer: 408 and closed, or closed",
    ),
    (
        "GATEWAY_IDLE_TIMEOUT",
        "5",
        "seconds a connection may stay open without a request, before the first one or between two; "
        "then closed",
    ),
    (
        "GATEWAY_CONNECTION_LOG_INTERVAL",
        "10",
        "seconds between log lines that count refused and timed-out connections (one line per interval, "
        "never one per connection)",
    ),
    (
        "GATEWAY_KEEP_FREED_MB",
        "64",
        "freed memory kept for the next requests, MiB per allocator arena (glibc), given back after "
        "10 s without requests; 0: glibc's default, which hands it back and faults it in again per image",
    ),
    ("GATEWAY_LOG_LEVEL", "info", "uvicorn log level: critical, error, warning, info, debug"),
)


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


class SettingsError(ValueError):
    """A variable holds a value the gateway cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    tf_serving_host: str = "localhost:8500"
    model_name: str = "clothing-model"
    signature_name: str = AUTO_SIGNATURE
    input_name: str | None = None
    output_name: str | None = None
    labels: tuple[str, ...] = CLOTHING_LABELS
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on all interfaces
    port: int = 9696
    predict_timeout: float = 20.0
    max_concurrency: int = 64
    max_active: int = 0
    max_batch: int = 16
    preprocess_threads: int = 0
    fetch_connect_timeout: float = 5.0
    fetch_read_timeout: float = 10.0
    fetch_total_timeout: float = 15.0
    fetch_max_redirects: int = 3
    fetch_allow_networks: tuple[IPNetwork, ...] = ()
    dns_threads: int = 32
    dns_timeout: float = 3.0
    dns_max_per_domain: int = 2
    grpc_load_balancing: str = "pick_first"
    shutdown_grace: float = 20.0
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    keep_freed_mb: int = 64
    log_level: str = "info"

    @property
    def limits(self) -> Limits:
        return self.preprocessing.limits

    @property
    def threads(self) -> int:
        return self.preprocess_threads or (os.cpu_count() or 1)

    @property
    def lookup_limits(self) -> LookupLimits:
        """Host name lookups for image URLs; a lookup never outlasts the fetch's connect timeout."""
        return LookupLimits(
            threads=self.dns_threads,
            timeout=min(self.dns_timeout, self.fetch_connect_timeout),
            per_domain=self.dns_max_per_domain,
        )

    @property
    def active(self) -> int:
        """Requests working at once: enough to keep the decode threads and a Predict call busy."""
        return self.max_active or 2 * self.threads

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Build the settings from environment variables (unset or empty: the default)."""
        env = _Env(environ)
        labels_file = env.text("GATEWAY_LABELS_FILE")
        if labels_file:
            try:
                labels = load_labels(Path(labels_file))
            except (OSError, ValueError) as e:
                raise SettingsError(f"GATEWAY_LABELS_FILE: {e}") from None
        else:
            labels = tuple(x.strip() for x in env.text("GATEWAY_LABELS").split(",") if x.strip())
            if not labels or len(set(labels)) != len(labels):
                raise SettingsError("GATEWAY_LABELS must list distinct class names, comma-separated")
        family = env.text("GATEWAY_PREPROCESSING")
        if family not in FAMILY_MODES:
            raise SettingsError(f"GATEWAY_PREPROCESSING={family!r}: one of {', '.join(sorted(FAMILY_MODES))}")
        size = env.integer("GATEWAY_IMAGE_SIZE", 1, 8192)
        limits = Limits(
            max_bytes=env.integer("GATEWAY_MAX_IMAGE_BYTES", 1, 1 << 30),
            max_pixels=env.integer("GATEWAY_MAX_IMAGE_PIXELS", 1, 1 << 31),
        )
        lb = env.text("GATEWAY_GRPC_LOAD_BALANCING")
        if lb not in ("pick_first", "round_robin"):
            raise SettingsError(f"GATEWAY_GRPC_LOAD_BALANCING={lb!r}: pick_first or round_robin")
        level = env.text("GATEWAY_LOG_LEVEL").lower()
        if level not in ("critical", "error", "warning", "info", "debug"):
            raise SettingsError(f"GATEWAY_LOG_LEVEL={level!r}: critical, error, warning, info or debug")
        host = env.text("TF_SERVING_HOST")
        if not host or any(c.isspace() for c in host):
            raise SettingsError(f"TF_SERVING_HOST={host!r} is not a host:port")
        return cls(
            tf_serving_host=host,
            model_name=env.text("GATEWAY_MODEL_NAME"),
            signature_name=env.text("GATEWAY_SIGNATURE"),
            input_name=env.text("GATEWAY_INPUT_NAME") or None,
            output_name=env.text("GATEWAY_OUTPUT_NAME") or None,
            labels=labels,
            preprocessing=PreprocessConfig(target_size=(size, size), family=family, limits=limits),
            host=env.text("GATEWAY_HOST"),
            port=env.integer("GATEWAY_PORT", 0, 65535),
            predict_timeout=env.seconds("GATEWAY_PREDICT_TIMEOUT"),
            max_concurrency=env.integer("GATEWAY_MAX_CONCURRENCY", 1, 100_000),
            max_active=env.integer("GATEWAY_MAX_ACTIVE", 0, 100_000),
            max_batch=env.integer("GATEWAY_MAX_BATCH", 1, 1024),
            preprocess_threads=env.integer("GATEWAY_PREPROCESS_THREADS", 0, 1024),
            fetch_connect_timeout=env.seconds("GATEWAY_FETCH_CONNECT_TIMEOUT"),
            fetch_read_timeout=env.seconds("GATEWAY_FETCH_READ_TIMEOUT"),
            fetch_total_timeout=env.seconds("GATEWAY_FETCH_TOTAL_TIMEOUT"),
            fetch_max_redirects=env.integer("GATEWAY_FETCH_MAX_REDIRECTS", 0, 20),
            fetch_allow_networks=env.networks("GATEWAY_FETCH_ALLOW_NETWORKS"),
            dns_threads=env.integer("GATEWAY_DNS_THREADS", 1, 1024),
            dns_timeout=env.seconds("GATEWAY_DNS_TIMEOUT"),
            dns_max_per_domain=env.integer("GATEWAY_DNS_MAX_PER_DOMAIN", 1, 1024),
            grpc_load_balancing=lb,
            shutdown_grace=env.seconds("GATEWAY_SHUTDOWN_GRACE"),
            connection_limits=ConnectionLimits(
                max_connections=env.integer("GATEWAY_MAX_CONNECTIONS", 1, 1_000_000),
                max_header_bytes=env.integer("GATEWAY_MAX_HEADER_BYTES", 1024, 1 << 20),
                max_headers=env.integer("GATEWAY_MAX_HEADERS", 1, 10_000),
                header_timeout=env.seconds("GATEWAY_HEADER_TIMEOUT"),
                body_timeout=env.seconds("GATEWAY_BODY_TIMEOUT"),
                idle_timeout=env.seconds("GATEWAY_IDLE_TIMEOUT"),
                log_interval=env.seconds("GATEWAY_CONNECTION_LOG_INTERVAL"),
            ),
            keep_freed_mb=env.integer("GATEWAY_KEEP_FREED_MB", 0, 2047),
            log_level=level,
        )


_DEFAULTS = {name: default for name, default, _ in ENVIRONMENT}


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str:
        value = self._environ.get(name, "").strip()
        return value or _DEFAULTS[name]

    def integer(self, name: str, low: int, high: int) -> int:
        raw = self.text(name)
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={value} is outside {low}..{high}")
        return value

    def seconds(self, name: str) -> float:
        raw = self.text(name)
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
        if not 0 < value <= 3600:
            raise SettingsError(f"{name}={value} must be more than 0 and at most 3600 seconds")
        return value

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        out = []
        for part in self.text(name).split(","):
            if part.strip():
                try:
                    out.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError:
                    raise SettingsError(f"{name}: {part.strip()!r} is not a CIDR like 10.0.0.0/8") from None
        return tuple(out)
