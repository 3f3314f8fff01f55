"""The server's settings: TF Serving's command line (and the image's environment), parsed once.

Flags keep TF Serving's names and defaults (`--port=8500 --rest_api_port=8501 --model_name=…`),
so a command line written for `tensorflow_model_server` starts this server unchanged. The few
additions (bounds, bind address, drain time) are named so they cannot be mistaken for TF Serving's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clothing_settings import SettingError, SettingsParser
from clothing_settings.validators import (
    flag_bool,
    non_negative_float,
    non_negative_int,
    number,
    port,
    positive_int,
    whole_number,
)
from model_server.config_files import (
    BatchingParameters,
    ModelConfig,
    load_batching_parameters,
    load_model_config_file,
    load_monitoring_config,
    unavailable_label_message,
)

# The TF Serving release whose `tensorflow_model_server --help` this command line follows: the
# one deploy/images/model/Dockerfile pins.
TF_SERVING_VERSION = "2.21.0"

ChannelArgument = tuple[str, int | str]


@dataclass(frozen=True)
class ServerSettings:
    grpc_port: int
    rest_api_port: int  # 0: no REST server
    bind_address: str
    models: tuple[ModelConfig, ...]
    file_system_poll_wait_seconds: float  # 0: look for versions once, at start
    batching: BatchingParameters | None  # None: every request runs on its own
    enable_model_warmup: bool
    tensor_content_responses: bool
    max_request_bytes: int
    max_concurrent_requests: int
    rest_api_timeout_ms: int  # 0: no limit
    intra_op_parallelism: int  # 0: TensorFlow chooses
    inter_op_parallelism: int
    drain_seconds: float
    grpc_socket_path: str | None = None  # gRPC also on this unix socket
    grpc_channel_arguments: tuple[ChannelArgument, ...] = ()
    prometheus_path: str | None = None  # Prometheus metrics at this REST path
    model_config_file: Path | None = None  # re-read every model_config_poll_seconds
    model_config_poll_seconds: float = 0.0  # 0: the config file is read once, at start
    # A new version label may name a version not yet AVAILABLE (TF Serving's flag); without it a
    # config with labels cannot be served from the start, when no version is available yet.
    allow_version_labels_for_unavailable_models: bool = False
    health_service: bool = True
    ignored_flags: tuple[str, ...] = ()  # TF Serving flags given that have no effect here


# Every other flag of `tensorflow_model_server --help` (main.cc of the pinned release): its TF
# Serving type, and why it has no effect here. They are accepted, so a command line written for
# TF Serving starts this server, and announced once at start.
IGNORED_FLAGS: dict[str, tuple[str, str]] = {
    "rest_api_num_threads": ("int", "REST threads follow --max_concurrent_requests"),
    "rest_api_enable_cors_support": ("bool", "no CORS headers are sent"),
    "grpc_max_threads": ("int", "gRPC threads follow --max_concurrent_requests"),
    "enable_per_model_batching_parameters": ("bool", "batching follows --batching_parameters_file only"),
    "num_load_threads": ("int", "versions load one at a time"),
    "num_unload_threads": ("int", "versions unload one at a time"),
    "max_num_load_retries": ("int", "a failed version is retried when its files change"),
    "load_retry_interval_micros": ("int", "a failed version is retried when its files change"),
    "flush_filesystem_caches": ("bool", "no file-system caches to flush"),
    "tensorflow_session_config_file": ("str", "sessions take only the parallelism flags"),
    "use_alts_credentials": ("bool", "gRPC is plaintext only"),
    "ssl_config_file": ("str", "gRPC is plaintext only"),
    "platform_config_file": ("str", "the TensorFlow platform only"),
    "per_process_gpu_memory_fraction": ("float", "CPU only"),
    "saved_model_tags": ("str", "the serve MetaGraph only"),
    "num_request_iterations_for_warmup": ("int", "each warmup record runs once"),
    "remove_unused_fields_from_bundle_metagraph": ("bool", "a memory saving of the C++ loader"),
    "prefer_tflite_model": ("bool", "no TensorFlow Lite"),
    "num_tflite_pools": ("int", "no TensorFlow Lite"),
    "num_tflite_interpreters_per_pool": ("int", "no TensorFlow Lite"),
    "enable_signature_method_name_check": ("bool", "no Classify or Regress"),
    "xla_cpu_compilation_enabled": ("bool", "TensorFlow's own XLA default"),
    "xla_gpu_compilation_enabled": ("bool", "CPU only"),
    "enable_profiler": ("bool", "no profiler service"),
    "thread_pool_factory_config_file": ("str", "TensorFlow's own thread pools"),
    "mixed_precision": ("str", "models run as exported"),
    "skip_initialize_tpu": ("bool", "no TPU"),
}


def parse_channel_arguments(text: str) -> tuple[ChannelArgument, ...]:
    """TF Serving's `--grpc_channel_arguments`: `key=value,key=value`, a value that parses as a
    32-bit integer passed as one, any other as a string."""
    out: list[ChannelArgument] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        key, value = key.strip(), value.strip()
        try:
            number = int(value)
        except ValueError:
            out.append((key, value))
            continue
        out.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
    return tuple(out)


class _VersionAction(argparse.Action):
    """`--version`: what TF Serving prints (its release, then TensorFlow's), then exit 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values is not None and not flag_bool(str(values)):
            return
        try:
            tensorflow = importlib.metadata.version("tensorflow")
        except importlib.metadata.PackageNotFoundError:
            tensorflow = "not installed"
        print(f"TensorFlow ModelServer: local model_server (flags of TF Serving {TF_SERVING_VERSION})\n"
              f"TensorFlow Library: {tensorflow}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog="model_server",
        allow_abbrev=False,  # TF Serving takes flags by their full names only
        description=(
            "A local TF-Serving-compatible model server: serves SavedModels from "
            "<base_path>/<version>/ over gRPC (PredictionService, ModelService, grpc.health.v1) "
            "and REST (/v1/models/...), with TF Serving's flags, status codes and messages."
        ),
        epilog=(
            "Environment (as the tensorflow/serving image uses it): MODEL_NAME is the default of "
            "--model_name; with MODEL_BASE_PATH set, --model_base_path defaults to "
            "$MODEL_BASE_PATH/$MODEL_NAME. Every other flag of tensorflow_model_server "
            f"{TF_SERVING_VERSION} is accepted and has no effect here; the server says which at start."
        ),
    )
    boolean = {"type": flag_bool, "nargs": "?", "const": True, "metavar": "BOOL"}
    p.add_argument("--port", type=port, default=8500,
                   help="gRPC port (default 8500; 0 picks a free port, printed in the ready line)")
    p.add_argument("--rest_api_port", type=port, default=0,
                   help="REST port (default 0: no REST server, as in TF Serving; the image uses 8501)")
    p.add_argument("--bind_address", default="0.0.0.0",  # noqa: S104 - TF Serving listens on all interfaces
                   help="address both servers listen on (default 0.0.0.0, as TF Serving; "
                        "127.0.0.1 for loopback only)")
    p.add_argument("--model_name", default=None,
                   help="name of the model when --model_base_path is used (default $MODEL_NAME or "
                        "'default'); ignored with --model_config_file")
    p.add_argument("--model_base_path", default=None,
                   help="folder holding the model's numeric version folders; the highest version is "
                        "served; ignored with --model_config_file")
    p.add_argument("--model_config_file", type=Path, default=None,
                   help="ModelServerConfig text file (model_config_list) for several models, version "
                        "policies and version labels; --model_name and --model_base_path are then "
                        "ignored, as in TF Serving")
    p.add_argument("--allow_version_labels_for_unavailable_models", default=False,
                   **boolean,  # type: ignore[arg-type]
                   help="let the model config give a new version label to a version that is not "
                        "AVAILABLE yet (default false: a label may only name an AVAILABLE version, "
                        "so a config with labels needs this flag to be served from the start; moving "
                        "an existing label always needs its new version AVAILABLE)")
    p.add_argument("--file_system_poll_wait_seconds", type=non_negative_float, default=1.0,
                   help="seconds between looks for new or removed versions (default 1; 0: once at start)")
    p.add_argument("--enable_batching", default=False, **boolean,  # type: ignore[arg-type]
                   help="merge concurrent Predict calls into one model run (default false)")
    p.add_argument("--batching_parameters_file", type=Path, default=None,
                   help="BatchingParameters text file: max_batch_size, batch_timeout_micros, "
                        "max_enqueued_batches, num_batch_threads, allowed_batch_sizes "
                        "(implies --enable_batching)")
    p.add_argument("--enable_model_warmup", default=True, **boolean,  # type: ignore[arg-type]
                   help="replay assets.extra/tf_serving_warmup_requests before a version is AVAILABLE "
                        "(default true)")
    p.add_argument("--enable_serialization_as_tensor_content", default=False,
                   **boolean,  # type: ignore[arg-type]
                   help="send gRPC response tensors in tensor_content instead of the typed *_val "
                        "fields (default false, as in TF Serving)")
    p.add_argument("--rest_api_timeout_in_ms", type=non_negative_int, default=30000,
                   help="REST request deadline in ms (default 30000; 0: none)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=non_negative_int, default=0,
                   help="threads within one TensorFlow op (default 0: TensorFlow chooses)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=non_negative_int, default=0,
                   help="TensorFlow ops run at once (default 0: TensorFlow chooses)")
    p.add_argument("--max_request_bytes", type=positive_int, default=64 << 20,
                   help="largest gRPC message or REST body accepted (default 64 MiB); larger is "
                        "RESOURCE_EXHAUSTED / 413")
    p.add_argument("--max_concurrent_requests", type=positive_int, default=64,
                   help="Predict calls admitted at once (default 64); more are refused at once with "
                        "RESOURCE_EXHAUSTED / 429 instead of queueing without bound")
    p.add_argument("--drain_seconds", type=non_negative_float, default=10.0,
                   help="on SIGTERM, how long requests in flight may take to finish (default 10)")
    p.add_argument("--grpc_socket_path", default=None,
                   help="also serve gRPC on this unix socket (a relative or absolute path)")
    p.add_argument("--grpc_channel_arguments", type=parse_channel_arguments, default=(),
                   help="gRPC server arguments, comma-separated key=value "
                        "(e.g. grpc.max_connection_age_ms=2000)")
    p.add_argument("--monitoring_config_file", type=Path, default=None,
                   help="MonitoringConfig text file; prometheus_config { enable: true path: ... } "
                        "serves Prometheus metrics at that path on the REST port")
    p.add_argument("--model_config_file_poll_wait_seconds", type=non_negative_float, default=0.0,
                   help="re-read --model_config_file this often and apply added and removed models, "
                        "version policies and labels (default 0: read once, at start)")
    p.add_argument("--tensorflow_session_parallelism", type=non_negative_int, default=0,
                   help="threads for both TensorFlow pools where the two flags above are 0 "
                        "(default 0: TensorFlow chooses)")
    p.add_argument("--enable_grpc_healthcheck_service", default=True, **boolean,  # type: ignore[arg-type]
                   help="offer grpc.health.v1 (default true here: the local stack relies on it)")
    p.add_argument("--version", action=_VersionAction, nargs="?", metavar="BOOL",
                   help="print the version and exit")
    types: dict[str, Callable[[str], object]] = {
        "int": whole_number, "float": number, "bool": flag_bool, "str": str
    }
    for name, (kind, reason) in IGNORED_FLAGS.items():
        extra: dict[str, Any] = {"nargs": "?", "const": True, "metavar": "BOOL"} if kind == "bool" else {}
        p.add_argument(f"--{name}", type=types[kind], default=None,
                       help=f"TF Serving's flag, accepted without effect: {reason}", **extra)
    return p


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ServerSettings:
    """Settings from a command line and the environment; `SettingError` says what is wrong.
    `--help` and `--version` print and exit 0 (SystemExit)."""
    args = build_parser().parse_args(list(argv))
    models = _models(args, environ)
    if not args.allow_version_labels_for_unavailable_models:
        # TF Serving checks the labels before it loads anything: at start no version is AVAILABLE.
        for model in models:
            for version in sorted(model.version_labels.values())[:1]:
                raise SettingError(
                    "--allow_version_labels_for_unavailable_models",
                    f"{unavailable_label_message(model.name, version)} (at start no version is; "
                    "start with --allow_version_labels_for_unavailable_models to label versions "
                    "in the first model config)",
                )
    batching: BatchingParameters | None = None
    if args.batching_parameters_file is not None:
        batching = load_batching_parameters(args.batching_parameters_file)
    elif args.enable_batching:
        batching = BatchingParameters()
    if args.port != 0 and args.port == args.rest_api_port:
        raise SettingError("--rest_api_port", f"--port and --rest_api_port are both {args.port}")
    prometheus_path: str | None = None
    if args.monitoring_config_file is not None:
        prometheus_path = load_monitoring_config(args.monitoring_config_file)
    ignored = tuple(name for name in IGNORED_FLAGS if getattr(args, name) is not None)
    # TF Serving: the session-wide flag sets both pools; each pool's own flag wins over it.
    intra = args.tensorflow_intra_op_parallelism or args.tensorflow_session_parallelism
    inter = args.tensorflow_inter_op_parallelism or args.tensorflow_session_parallelism
    return ServerSettings(
        grpc_port=args.port,
        rest_api_port=args.rest_api_port,
        bind_address=args.bind_address,
        models=models,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        batching=batching,
        enable_model_warmup=args.enable_model_warmup,
        tensor_content_responses=args.enable_serialization_as_tensor_content,
        max_request_bytes=args.max_request_bytes,
        max_concurrent_requests=args.max_concurrent_requests,
        rest_api_timeout_ms=args.rest_api_timeout_in_ms,
        intra_op_parallelism=intra,
        inter_op_parallelism=inter,
        drain_seconds=args.drain_seconds,
        grpc_socket_path=args.grpc_socket_path or None,
        grpc_channel_arguments=args.grpc_channel_arguments,
        prometheus_path=prometheus_path,
        model_config_file=args.model_config_file,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        model_config_poll_seconds=(
            args.model_config_file_poll_wait_seconds if args.model_config_file is not None else 0.0
        ),
        health_service=args.enable_grpc_healthcheck_service,
        ignored_flags=ignored,
    )


def describe_ignored(names: Sequence[str]) -> str:
    """The one start-up line naming the TF Serving flags given that have no effect here."""
    return "TF Serving flags accepted without effect here: " + "; ".join(
        f"--{name} ({IGNORED_FLAGS[name][1]})" for name in names
    )


def _models(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[ModelConfig, ...]:
    if args.model_config_file is not None:
        # TF Serving: "If used, --model_name, --model_base_path are ignored."
        return load_model_config_file(args.model_config_file)
    name = args.model_name or environ.get("MODEL_NAME") or "default"
    base_path = args.model_base_path
    if base_path is None and environ.get("MODEL_BASE_PATH"):
        # The tensorflow/serving image's entrypoint: --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME}.
        base_path = str(Path(environ["MODEL_BASE_PATH"]) / name)
    if not base_path:
        raise SettingError(
            "--model_base_path", "no model to serve: give --model_base_path (or --model_config_file)"
        )
    return (ModelConfig(name=name, base_path=Path(base_path)),)
