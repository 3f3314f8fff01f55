"""The stack's settings: flags, each with an environment variable as its default, read once.

`FLAGS` defines every flag once (name, variable, default, meaning); the parser, `--help` and the
README's table (`flags_table()`, checked by settings_test.py) are all made from it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clothing_preproc.signature import COURSE_MODEL_NAME
from clothing_settings import SettingError, SettingsParser, markdown_table
from clothing_settings.validators import host_port, http_url, port, seconds

# The cache's demo models live in `<cache>/models-r<DEMO_REVISION>`. Bump the revision when `export
# demo` starts writing something the stack relies on that demos exported earlier lack (2: the
# `pixels` signature): the next run then exports afresh instead of serving the stale one.
DEMO_REVISION = 2


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "clothing-classifier" / "local-stack"


@dataclass(frozen=True)
class StackSettings:
    # The folder holding numbered versions (TF Serving's --model_base_path); None: the demo model.
    model_dir: Path | None
    # host:port of a running TF Serving to use instead of starting the local model server.
    tf_serving: str | None
    model_name: str
    host: str
    port: int
    grpc_port: int
    rest_port: int
    cache_dir: Path
    # Seconds to wait for the stack to become ready (a first run also exports the demo model).
    ready_timeout: float
    # The gateway's prediction log (GATEWAY_PREDICTION_LOG): a file, or "-" for standard output.
    prediction_log: str | None = None
    # The model server serves TF Serving's Prometheus metrics (--monitoring_config_file).
    monitoring: bool = False
    # An OTLP/HTTP collector the gateway sends its spans to (GATEWAY_OTLP_ENDPOINT).
    traces_endpoint: str | None = None

    @property
    def url(self) -> str:
        shown = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "localhost") else self.host  # noqa: S104
        return f"http://{shown}:{self.port}"

    @property
    def monitoring_config(self) -> Path:
        """The model server's `--monitoring_config_file`, written by the stack with --monitoring."""
        return self.cache_dir / "monitoring.config"

    @property
    def demo_base(self) -> Path:
        """Where the demo model is exported: `<cache>/models-r<revision>/<name>/<version>/`."""
        return self.cache_dir / f"models-r{DEMO_REVISION}"


@dataclass(frozen=True)
class Flag:
    """One flag: its default is `default`, or the value of `variable` when that is set."""

    name: str
    meaning: str
    default: str | None  # as typed on the command line; None: not given
    variable: str | None = None
    kind: Callable[[str], object] = str
    metavar: str | None = None
    words: str | None = None  # the default in words, where `default` is None or not what is meant
    switch: bool = False  # takes no value: given or not

    @property
    def shown(self) -> str:
        """The default as --help and the README show it."""
        return self.words if self.words is not None else f"`{self.default}`"


FLAGS: tuple[Flag, ...] = (
    Flag(
        "--model-dir",
        "a model folder as export writes it: `<base>/<name>`, holding numbered versions",
        None,
        "CLOTHING_MODEL_DIR",
        Path,
        words="the demo model",
    ),
    Flag(
        "--tf-serving",
        "`host:port` of a running TF Serving (gRPC) to use instead",
        None,
        "CLOTHING_TF_SERVING",
        host_port,
        "HOST:PORT",
        words="start the local model server",
    ),
    Flag("--model-name", "the model's name in TF Serving", COURSE_MODEL_NAME, "CLOTHING_MODEL_NAME"),
    Flag(
        "--cache-dir",
        "where the demo model is exported",
        None,
        "CLOTHING_CACHE_DIR",
        Path,
        words="`~/.cache/clothing-classifier/local-stack`",
    ),
    Flag(
        "--host", "address the gateway listens on: this machine only; `0.0.0.0` for the network", "127.0.0.1"
    ),
    Flag("--port", "the gateway's port", "9696", kind=port),
    Flag("--grpc-port", "the local model server's gRPC port", "8500", kind=port),
    Flag("--rest-port", "the local model server's REST port; 0: off", "8501", kind=port),
    Flag(
        "--prediction-log",
        "the gateway's prediction log, one JSON line per classified image (`GATEWAY_PREDICTION_LOG`, "
        "docs/prediction-log.md): a file, appended to; `-`: the stack's output",
        None,
        "CLOTHING_PREDICTION_LOG",
        metavar="PATH",
        words="off",
    ),
    Flag(
        "--monitoring",
        "the model server also serves TF Serving's Prometheus metrics, at "
        "`/monitoring/prometheus/metrics` on the REST port (its `--monitoring_config_file`, written "
        "into the cache folder), beside the gateway's `/metrics`: what deploy/monitoring's rules and "
        "dashboard read; the gateway's model-ready gauge is refreshed every 5 s",
        None,
        switch=True,
        words="off",
    ),
    Flag(
        "--traces-endpoint",
        "an OpenTelemetry collector (OTLP over HTTP, e.g. `http://localhost:4318`) the gateway sends a "
        "trace of every request to (`GATEWAY_OTLP_ENDPOINT`)",
        None,
        "CLOTHING_TRACES_ENDPOINT",
        http_url,
        "URL",
        words="off",
    ),
    Flag(
        "--ready-timeout",
        "seconds to wait for everything to be ready before giving up; a first run also exports the "
        "demo model",
        "300",
        kind=seconds,
    ),
)


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    p = SettingsParser(
        prog="local_stack",
        description=(
            "Run the clothing classifier locally: the TF-Serving-compatible model server and the gateway "
            "(web page and API). With no model given, the tiny untrained demo model is exported into the "
            "cache folder on first run. Ctrl-C stops both."
        ),
        epilog=(
            "The gateway's own settings (GATEWAY_*, see the README) are passed through from the "
            "environment, e.g. GATEWAY_FETCH_ALLOW_NETWORKS=127.0.0.0/8 to classify images served "
            "on this machine."
        ),
    )
    for flag in FLAGS:
        default = (environ.get(flag.variable) if flag.variable else None) or flag.default
        where = f"env {flag.variable}; " if flag.variable else ""
        if flag.switch:
            p.add_argument(flag.name, action="store_true", help=f"{flag.meaning} (default: {flag.shown})"
                           .replace("%", "%%").replace("`", ""))  # fmt: skip
            continue
        p.add_argument(
            flag.name,
            type=flag.kind,
            default=default,
            metavar=flag.metavar,
            # argparse reads % in help as a format; the meanings hold none but a literal one.
            help=f"{flag.meaning} ({where}default: {flag.shown})".replace("%", "%%").replace("`", ""),
        )
    return p


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> StackSettings:
    """Settings from the command line and the environment; `SettingError` says what is wrong.
    `--help` prints and exits 0 (SystemExit)."""
    ns = parser(environ).parse_args(list(argv))
    if ns.model_dir is not None and ns.tf_serving is not None:
        raise SettingError(
            "--tf-serving",
            "give --model-dir or --tf-serving, not both: an existing TF Serving has its own model",
        )
    if ns.monitoring and ns.tf_serving is not None:
        raise SettingError(
            "--monitoring",
            "--monitoring configures the local model server; an existing TF Serving (--tf-serving) "
            "takes its own --monitoring_config_file",
        )
    if ns.monitoring and ns.rest_port == 0:
        raise SettingError(
            "--monitoring", "--monitoring serves the metrics on the REST port; --rest-port is 0"
        )
    prediction_log = ns.prediction_log or None
    if prediction_log is not None and prediction_log != "-":
        # The gateway's working folder is the stack's, but an absolute path reads unambiguously.
        prediction_log = str(Path(prediction_log).expanduser().absolute())
    cache_dir = ns.cache_dir if ns.cache_dir is not None else default_cache_dir(environ)
    return StackSettings(
        model_dir=ns.model_dir.expanduser().resolve() if ns.model_dir else None,
        tf_serving=ns.tf_serving,
        model_name=ns.model_name,
        host=ns.host,
        port=ns.port,
        grpc_port=ns.grpc_port,
        rest_port=ns.rest_port,
        cache_dir=cache_dir.expanduser(),
        ready_timeout=ns.ready_timeout,
        prediction_log=prediction_log,
        monitoring=ns.monitoring,
        traces_endpoint=ns.traces_endpoint or None,
    )


FLAGS_TABLE_HEADER = ("flag", "variable", "default", "meaning")


def flags_table() -> str:
    """The README's table of the stack's flags."""
    return markdown_table(
        FLAGS_TABLE_HEADER,
        [
            (f"`{f.name}`", f"`{f.variable}`" if f.variable else "", f.shown, f.meaning)
            for f in FLAGS
        ],
    )
