"""TF Serving's text-format config files: `--model_config_file`, `--batching_parameters_file` and
`--monitoring_config_file`.

The model config is parsed with TF Serving's own message (`tensorflow_serving.config`, which is
light: no TensorFlow import, and declares no service, so it lives beside this project's stubs).
`BatchingParameters` and `MonitoringConfig` are not shipped in tensorflow-serving-api, so their
schemas are declared here with TF Serving's field names and numbers; protobuf's text parser then
reads exactly what TF Serving reads (wrappers as `max_batch_size { value: 32 }`, comments, field
order free). A file that does not parse is reported as TF Serving reports it:
`Error parsing text-format tensorflow.serving.ModelServerConfig: LINE:COLUMN: …`.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from clothing_settings import SettingError


@dataclass(frozen=True)
class VersionPolicy:
    """Which version folders to serve: TF Serving's `model_version_policy`."""

    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1  # for "latest"
    versions: frozenset[int] = frozenset()  # for "specific"

    def choose(self, on_disk: set[int]) -> set[int]:
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return on_disk & set(self.versions)
        return set(sorted(on_disk)[-self.num_versions :]) if on_disk else set()


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    version_labels: dict[str, int] = field(default_factory=dict)


def unavailable_label_message(model: str, version: int) -> str:
    """TF Serving's refusal of a version label naming a version that is not AVAILABLE."""
    return (
        f"Request to assign label to version {version} of model {model}, "
        "which is not currently available for inference"
    )


@dataclass(frozen=True)
class BatchingParameters:
    """Server-side batching, with TF Serving's defaults for anything the file leaves out."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"batching parameter {name} must be at least 1")
        if self.batch_timeout_micros < 0:
            raise SettingError(
                "batch_timeout_micros", "batching parameter batch_timeout_micros must not be negative"
            )
        sizes = self.allowed_batch_sizes
        if sizes:
            # TF Serving's own checks (batching_session.cc), with its wording.
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise SettingError(
                    "allowed_batch_sizes", "allowed_batch_sizes entries must be monotonically increasing"
                )
            if sizes[-1] != self.max_batch_size:
                raise SettingError(
                    "allowed_batch_sizes", "final entry in allowed_batch_sizes must equal max_batch_size"
                )


def load_model_config_file(path: Path) -> tuple[ModelConfig, ...]:
    """The models of a `ModelServerConfig` text file (`model_config_list { config { … } }`)."""
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    _parse_text(path, message, "tensorflow.serving.ModelServerConfig")
    if message.WhichOneof("config") != "model_config_list":
        raise SettingError(str(path), f"{path}: expected a model_config_list")
    models: list[ModelConfig] = []
    for entry in message.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise SettingError(str(path), f"{path}: every config needs a name and a base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise SettingError(
                str(path), f"{path}: model {entry.name}: unsupported platform {entry.model_platform!r}"
            )
        if any(m.name == entry.name for m in models):
            raise SettingError(str(path), f"{path}: model {entry.name} is configured twice")
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=Path(entry.base_path),
                policy=_policy(entry.model_version_policy, path, entry.name),
                version_labels=dict(entry.version_labels),
            )
        )
    if not models:
        raise SettingError(str(path), f"{path}: no models configured")
    return tuple(models)


def _policy(policy: Any, path: Path, name: str) -> VersionPolicy:
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy(kind="all")
    if kind == "specific":
        if not policy.specific.versions:
            raise SettingError(
                str(path), f"{path}: model {name}: a specific policy needs at least one version"
            )
        return VersionPolicy(kind="specific", versions=frozenset(int(v) for v in policy.specific.versions))
    num = int(policy.latest.num_versions) if kind == "latest" and policy.latest.num_versions else 1
    return VersionPolicy(kind="latest", num_versions=num)


def load_batching_parameters(path: Path) -> BatchingParameters:
    """The parameters of a `BatchingParameters` text file, defaults for the fields it omits."""
    message = _message_class("BatchingParameters")()
    _parse_text(path, message, "tensorflow.serving.BatchingParameters")
    values: dict[str, Any] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if message.HasField(name):
            values[name] = int(getattr(message, name).value)
    if message.allowed_batch_sizes:
        values["allowed_batch_sizes"] = tuple(int(x) for x in message.allowed_batch_sizes)
    return BatchingParameters(**values)


# TF Serving's default Prometheus path (prometheus_exporter.h), used when the config names none.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def load_monitoring_config(path: Path) -> str | None:
    """The REST path of Prometheus metrics a `MonitoringConfig` file asks for; None if disabled."""
    message = _message_class("MonitoringConfig")()
    _parse_text(path, message, "tensorflow.serving.MonitoringConfig")
    prometheus = message.prometheus_config
    if not prometheus.enable:
        return None
    route = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not route.startswith("/"):
        raise SettingError(str(path), f"{path}: prometheus_config path must start with '/', got {route!r}")
    return str(route)


def _parse_text(path: Path, message: Any, full_name: str) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingError(str(path), f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SettingError(
            str(path), f"{path}: Error parsing text-format {full_name}: not UTF-8 text"
        ) from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        # Protobuf C++'s wording, which TF Serving prints and its tests look for.
        line, column = e.GetLine(), e.GetColumn()
        detail = str(e)
        if line is not None:
            location = f"{line}:{column}" if column is not None else f"{line}"
            detail = detail.removeprefix(f"{location} : ")
            detail = f"{location}: {detail}"
        raise SettingError(str(path), f"{path}: Error parsing text-format {full_name}: {detail}") from None


_BATCHING_FIELDS: tuple[tuple[str, int, str | None], ...] = (
    # TF Serving's session_bundle_config.proto field names and numbers.
    ("max_batch_size", 1, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, None),
    ("pad_variable_length_inputs", 7, "bool"),
    ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
)


@functools.cache  # built once: a descriptor pool refuses the same file twice
def _config_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="model_server/config_files.proto",
        package="model_server.config",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    # monitoring_config.proto: MonitoringConfig { PrometheusConfig prometheus_config = 1; }.
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1,
                         type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                         type_name=".model_server.config.PrometheusConfig",
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    msg = proto.message_type.add(name="BatchingParameters")
    for name, number, type_name in _BATCHING_FIELDS:
        f = msg.field.add(name=name, number=number)
        if type_name is None:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
            f.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        elif type_name == "bool":
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
            f.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        else:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            f.type_name = type_name
            f.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    pool.Add(proto)
    return pool


def _message_class(name: str) -> Any:
    descriptor = _config_pool().FindMessageTypeByName(f"model_server.config.{name}")
    return message_factory.GetMessageClass(descriptor)
