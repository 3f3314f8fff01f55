"""The server's settings: TF Serving's command line (and the image's environment), parsed once.

Flags keep TF Serving's names and defaults (`--port=8500 --rest_api_port=8501 --model_name=…`),
so a command line written for `tensorflow_model_server` starts this server unchanged. The few
additions (bounds, bind address, drain time) are named so they cannot be mistaken for TF Serving's.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from model_server.config_files import (
    BatchingParameters,
    ModelConfig,
    load_batching_parameters,
    load_model_config_file,
)
from model_server.errors import ConfigError


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


def _flag_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One readable line for main() to print, instead of argparse's usage dump and exit(2).
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="model_server",
        description=(
            "A local TF-Serving-compatible model server: serves SavedModels from "
            "<base_path>/<version>/ over gRPC (PredictionService, ModelService, grpc.health.v1) "
            "and REST (/v1/models/...), with TF Serving's flags, status codes and messages."
        ),
        epilog=(
            "Environment (as the tensorflow/serving image uses it): MODEL_NAME is the default of "
            "--model_name; with MODEL_BASE_PATH set, --model_base_path defaults to "
            "$MODEL_BASE_PATH/$MODEL_NAME."
        ),
    )
    boolean = {"type": _flag_bool, "nargs": "?", "const": True, "metavar": "BOOL"}
    p.add_argument("--port", type=_port, default=8500,
                   help="gRPC port (default 8500; 0 picks a free port, printed in the ready line)")
    p.add_argument("--rest_api_port", type=_port, default=0,
                   help="REST port (default 0: no REST server, as in TF Serving; the image uses 8501)")
    p.add_argument("--bind_address", default="0.0.0.0",  # noqa: S104 - TF Serving listens on all interfaces
                   help="address both servers listen on (default 0.0.0.0, as TF Serving; "
                        "127.0.0.1 for loopback only)")
    p.add_argument("--model_name", default=None,
                   help="name of the model when --model_base_path is used (default $MODEL_NAME or 'default')")
    p.add_argument("--model_base_path", default=None,
                   help="folder holding the model's numeric version folders; the highest version is served")
    p.add_argument("--model_config_file", type=Path, default=None,
                   help="ModelServerConfig text file (model_config_list) for several models, version "
                        "policies and version labels; excludes --model_base_path")
    p.add_argument("--file_system_poll_wait_seconds", type=_non_negative_float, default=1.0,
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
    p.add_argument("--rest_api_timeout_in_ms", type=_non_negative_int, default=30000,
                   help="REST request deadline in ms (default 30000; 0: none)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=_non_negative_int, default=0,
                   help="threads within one TensorFlow op (default 0: TensorFlow chooses)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=_non_negative_int, default=0,
                   help="TensorFlow ops run at once (default 0: TensorFlow chooses)")
    p.add_argument("--max_request_bytes", type=_positive_int, default=64 << 20,
                   help="largest gRPC message or REST body accepted (default 64 MiB); larger is "
                        "RESOURCE_EXHAUSTED / 413")
    p.add_argument("--max_concurrent_requests", type=_positive_int, default=64,
                   help="Predict calls admitted at once (default 64); more are refused at once with "
                        "RESOURCE_EXHAUSTED / 429 instead of queueing without bound")
    p.add_argument("--drain_seconds", type=_non_negative_float, default=10.0,
                   help="on SIGTERM, how long requests in flight may take to finish (default 10)")
    return p


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ServerSettings:
    """Settings from a command line and the environment; `ConfigError` says what is wrong."""
    args = build_parser().parse_args(list(argv))
    models = _models(args, environ)
    batching: BatchingParameters | None = None
    if args.batching_parameters_file is not None:
        batching = load_batching_parameters(args.batching_parameters_file)
    elif args.enable_batching:
        batching = BatchingParameters()
    if args.port != 0 and args.port == args.rest_api_port:
        raise ConfigError(f"--port and --rest_api_port are both {args.port}")
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
        intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        drain_seconds=args.drain_seconds,
    )


def _models(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[ModelConfig, ...]:
    if args.model_config_file is not None:
        if args.model_base_path is not None:
            raise ConfigError("--model_config_file and --model_base_path cannot both be set")
        return load_model_config_file(args.model_config_file)
    name = args.model_name or environ.get("MODEL_NAME") or "default"
    base_path = args.model_base_path
    if base_path is None and environ.get("MODEL_BASE_PATH"):
        # The tensorflow/serving image's entrypoint: --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME}.
        base_path = str(Path(environ["MODEL_BASE_PATH"]) / name)
    if not base_path:
        raise ConfigError("no model to serve: give --model_base_path (or --model_config_file)")
    return (ModelConfig(name=name, base_path=Path(base_path)),)
