"""Talking to TF Serving over one grpc.aio channel: metadata, status and Predict.

The channel is created once per process (in the app's lifespan) and shared by all requests. Every
call carries a deadline: TF Serving itself never cancels work, so a stuck model must not hold a
request forever. gRPC failures become the gateway's errors here, nowhere else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from clothing_preproc import (
    ImageSignature,
    PreprocessConfig,
    TensorCodecError,
    array_to_tensor_proto,
    image_signature,
    tensor_proto_to_array,
    unpack_signature_def_map,
)
from clothing_protos import prediction_service_pb2, prediction_service_pb2_grpc, serving_pb2
from gateway.errors import (
    GatewayError,
    ModelDeadlineExceeded,
    ModelFailed,
    ModelNotFound,
    ModelRefused,
    ModelUnavailable,
    VersionNotFound,
)
from gateway.settings import ServingTarget
from gateway.versions import LATEST, ModelChoice, not_served

# One float32 image of 299×299×3 is 1,072,890 bytes on the wire (uint8 pixels: a quarter of it);
# room for a full batch of float32 plus headers.
_HEADROOM = 1 << 20
_STATUS_TIMEOUT = 3.0
_METADATA_TIMEOUT = 10.0
_PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
_PREDICT = _PREDICTION_SERVICE.methods_by_name["Predict"]
# The gRPC method path of Predict, for calls made with a request serialised beforehand.
PREDICT_PATH = f"/{_PREDICT.containing_service.full_name}/{_PREDICT.name}"
# Calls that gRPC itself retries once when they fail UNAVAILABLE (a TF Serving pod stopping or
# gone): both only read, so a second attempt is harmless. With round_robin the retry picks the
# next ready pod; with pick_first (one address, or a ClusterIP Service) it goes out again on the
# same connection, i.e. to the same pod until kube-proxy is asked for a new connection.
RETRIED_METHODS = ("Predict", "GetModelMetadata")
RETRY_POLICY = {
    "maxAttempts": 2,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# How soon after one DNS resolution of TF Serving's name the channel may resolve again (gRPC's
# default is 30 s). It re-resolves only when a connection closes (TF Serving's max connection
# age, a pod gone), so this bounds how long it keeps reconnecting to a pod that has left the
# headless Service's answer: deploy/base/tf-serving.yaml's preStop pause counts it.
DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS = 5_000


@dataclass(frozen=True)
class ModelInfo:
    """What the gateway learned about the model at startup (GetModelMetadata + settings)."""

    signature: ImageSignature
    labels: tuple[str, ...]
    preprocessing: PreprocessConfig

    @property
    def input_name(self) -> str:
        return self.signature.input.name

    @property
    def output_name(self) -> str:
        return self.signature.output.name


@dataclass(frozen=True)
class PredictCall:
    """A PredictRequest already serialised (off the event loop): what gRPC sends as it is."""

    request: bytes
    images: int
    choice: ModelChoice = LATEST  # the version or label its ModelSpec names


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # public: /readyz shows it
    versions: tuple[int, ...] = ()
    detail: str | None = None  # for the log: TF Serving's address and its own words


def channel_options(target: ServingTarget) -> list[tuple[str, object]]:
    h, w = target.preprocessing.target_size
    request_bytes = target.max_batch * h * w * 3 * 4 + _HEADROOM
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", request_bytes),
        # Answers are logits (small), but a misconfigured output could be big; bound it anyway.
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        # Keepalive detects a dead TF Serving pod behind a silent network (e.g. a node gone) while
        # calls are in flight; idle pings would be refused by gRPC servers' default ping policy.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        # Reconnect quickly after TF Serving restarts (the default backoff grows to 2 minutes).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS),
        # Retries (the service config's retryPolicy): gRPC keeps a call's request to send it
        # again only up to this size (default 256 KiB, less than one uint8 image); a larger call
        # would silently not be retried.
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", request_bytes),
        ("grpc.service_config", json.dumps(service_config(target))),
    ]
    return options


def service_config(target: ServingTarget) -> dict[str, Any]:
    """gRPC's service config for the channel: load balancing, and the retry of UNAVAILABLE."""
    config: dict[str, Any] = {
        "methodConfig": [
            {
                "name": [{"service": _PREDICTION_SERVICE.full_name, "method": m} for m in RETRIED_METHODS],
                "retryPolicy": RETRY_POLICY,
            }
        ]
    }
    if target.load_balancing == "round_robin":
        # A headless Service's DNS name lists every TF Serving pod; round_robin keeps a subchannel
        # to each and spreads calls over them (pick_first would pin everything to one pod).
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return config


def channel_target(target: ServingTarget) -> str:
    host = target.address
    # A gRPC target with its resolver named (dns:, ipv4:127.0.0.1:1,127.0.0.1:2, unix:...) is kept.
    named = "://" in host or host.startswith(("dns:", "ipv4:", "ipv6:", "unix:"))
    if target.load_balancing == "round_robin" and not named:
        return f"dns:///{host}"
    return host


class ServingClient:
    """TF Serving for one model; `info()` discovers the signature once and caches it."""

    def __init__(self, target: ServingTarget) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(channel_target(target), options=channel_options(target))
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        # Predict takes requests serialised beforehand by predict_call(), in the decode threads:
        # building and serialising a 1 MB tensor message would otherwise hold the event loop.
        self._predict_serialised = self._channel.unary_unary(
            PREDICT_PATH,
            request_serializer=None,
            response_deserializer=serving_pb2.PredictResponse.FromString,
        )
        self._models = prediction_service_pb2_grpc.ModelServiceStub(self._channel)
        self._info: ModelInfo | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._channel.close()

    async def info(self) -> ModelInfo:
        """The model's signature, labels and preprocessing (GetModelMetadata on first use)."""
        if self._info is not None:
            return self._info
        async with self._lock:
            if self._info is None:
                self._info = await self._discover()
            return self._info

    def forget(self) -> None:
        """Drop the cached metadata: the next call asks TF Serving again (e.g. a new model version)."""
        self._info = None

    async def _discover(self) -> ModelInfo:
        s = self.target
        request = serving_pb2.GetModelMetadataRequest(
            model_spec=serving_pb2.ModelSpec(name=s.model_name), metadata_field=["signature_def"]
        )
        response: serving_pb2.GetModelMetadataResponse = await self._call(
            self._predict.GetModelMetadata,
            request,
            min(_METADATA_TIMEOUT, s.timeout),
            "GetModelMetadata",
        )
        if "signature_def" not in response.metadata:
            raise ModelFailed("TF Serving's metadata has no signature_def")
        try:
            signatures = unpack_signature_def_map(response.metadata["signature_def"])
            signature = image_signature(signatures, s.signature_name, s.input_name, s.output_name)
        except TensorCodecError as e:
            raise ModelFailed(f"the model does not fit the gateway: {e}") from None
        out_shape = signature.output.shape
        if (
            out_shape is not None
            and len(out_shape) == 2
            and out_shape[1] > 0
            and out_shape[1] != len(s.labels)
        ):
            raise ModelFailed(
                f"the model has {out_shape[1]} outputs but the gateway knows {len(s.labels)} labels "
                f"(set GATEWAY_LABELS or GATEWAY_LABELS_FILE)"
            )
        preprocessing = s.preprocessing
        if signature.image_size is not None and signature.image_size != preprocessing.target_size:
            preprocessing = PreprocessConfig(
                target_size=signature.image_size, family=preprocessing.family, limits=preprocessing.limits
            )
        return ModelInfo(signature=signature, labels=s.labels, preprocessing=preprocessing)

    async def readiness(self) -> Readiness:
        """Ready when a version of the model is AVAILABLE and its signature fits the gateway."""
        request = serving_pb2.GetModelStatusRequest(
            model_spec=serving_pb2.ModelSpec(name=self.target.model_name)
        )
        try:
            response: serving_pb2.GetModelStatusResponse = await self._call(
                self._models.GetModelStatus, request, _STATUS_TIMEOUT, "GetModelStatus"
            )
        except GatewayError as e:
            self.forget()
            return Readiness(False, e.message, detail=e.detail)
        available = tuple(
            int(v.version)
            for v in response.model_version_status
            if v.state == serving_pb2.ModelVersionStatus.AVAILABLE
        )
        if not available:
            self.forget()
            states = ", ".join(
                f"{v.version}: {serving_pb2.ModelVersionStatus.State.Name(v.state)}"
                for v in response.model_version_status
            )
            return Readiness(
                False, f"no version of {self.target.model_name} is AVAILABLE ({states or 'none'})"
            )
        try:
            await self.info()
        except GatewayError as e:
            return Readiness(False, e.message, available, e.detail)
        return Readiness(True, "ready", available)

    def predict_call(
        self,
        info: ModelInfo,
        batch: npt.NDArray[np.float32] | npt.NDArray[np.uint8],
        choice: ModelChoice = LATEST,
    ) -> PredictCall:
        """The Predict request for a batch, serialised: float32 preprocessed images, or uint8 pixels
        if the signature takes them (`info.signature.takes_pixels`), to the version `choice` names
        (TF Serving's latest by default). No I/O: call it in a thread."""
        expected = np.uint8 if info.signature.takes_pixels else np.float32
        if batch.dtype != expected:
            raise TypeError(
                f"signature {info.signature.signature_name} takes {np.dtype(expected)}, not {batch.dtype}"
            )
        spec = self.model_spec(choice, signature_name=info.signature.signature_name)
        request = serving_pb2.PredictRequest(model_spec=spec, output_filter=[info.output_name])
        array_to_tensor_proto(batch, into=request.inputs[info.input_name])
        return PredictCall(request.SerializeToString(), int(batch.shape[0]), choice)

    def model_spec(self, choice: ModelChoice = LATEST, signature_name: str = "") -> serving_pb2.ModelSpec:
        """The model's ModelSpec with the version choice: `version`, `version_label` or neither."""
        spec = serving_pb2.ModelSpec(name=self.target.model_name, signature_name=signature_name)
        if choice.version is not None:
            spec.version.value = choice.version
        elif choice.label is not None:
            spec.version_label = choice.label
        return spec

    async def available_versions(self) -> tuple[int, ...]:
        """The model's AVAILABLE versions, by GetModelStatus (empty if TF Serving knows none)."""
        request = serving_pb2.GetModelStatusRequest(model_spec=self.model_spec())
        try:
            response: serving_pb2.GetModelStatusResponse = await self._call(
                self._models.GetModelStatus, request, _STATUS_TIMEOUT, "GetModelStatus"
            )
        except ModelUnavailable:
            return ()
        return tuple(
            sorted(
                int(v.version)
                for v in response.model_version_status
                if v.state == serving_pb2.ModelVersionStatus.AVAILABLE
            )
        )

    async def version_of(self, choice: ModelChoice) -> int | None:
        """The version a choice names now, if TF Serving serves it (GetModelMetadata resolves a
        label as Predict does); None if it names no AVAILABLE version."""
        if choice.version is not None:
            return choice.version if choice.version in await self.available_versions() else None
        request = serving_pb2.GetModelMetadataRequest(
            model_spec=self.model_spec(choice), metadata_field=["signature_def"]
        )
        try:
            response: serving_pb2.GetModelMetadataResponse = await self._call(
                self._predict.GetModelMetadata, request, _STATUS_TIMEOUT, "GetModelMetadata"
            )
        except (ModelUnavailable, ModelFailed):
            # NOT_FOUND (a label on a version not loaded) or INVALID_ARGUMENT (an unknown label).
            return None
        return int(response.model_spec.version.value) if response.model_spec.HasField("version") else None

    async def predict(
        self,
        info: ModelInfo,
        call: PredictCall,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> tuple[npt.NDArray[np.float64], int | None]:
        """Logits of shape (N, classes), and the model version that answered.

        `timeout` is the call's deadline in seconds (default: the target's, GATEWAY_PREDICT_TIMEOUT);
        `metadata` goes with the call (the trace's `traceparent`: tracing.grpc_metadata()).
        """
        try:
            response: serving_pb2.PredictResponse = await self._call(
                self._predict_serialised,
                call.request,
                self.target.timeout if timeout is None else timeout,
                "Predict",
                metadata,
            )
        except (ModelNotFound, ModelRefused) as e:
            if call.choice.pinned:
                raise await self._choice_error(call.choice, info, e) from None
            self.forget()  # the model may have been replaced by one with other names
            raise
        except (ModelFailed, ModelUnavailable):
            # The model may have been replaced by one with other names: rediscover next time.
            self.forget()
            raise
        if info.output_name not in response.outputs:
            raise ModelFailed(f'TF Serving answered without the output "{info.output_name}"')
        logits = tensor_proto_to_array(response.outputs[info.output_name])
        n = call.images
        if logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] != len(info.labels):
            which = f" ({call.choice.describe()})" if call.choice.pinned else ""
            raise ModelFailed(
                f"TF Serving answered shape {list(logits.shape)}{which}; expected [{n}, {len(info.labels)}]"
            )
        version = int(response.model_spec.version.value) if response.model_spec.HasField("version") else None
        return logits.astype(np.float64), version

    async def _choice_error(
        self, choice: ModelChoice, info: ModelInfo, refused: GatewayError
    ) -> GatewayError:
        """Why TF Serving refused a pinned call: the version or label names nothing it serves (404
        with the versions it does), or the version it names does not take the signature the gateway
        discovered from the latest version."""
        versions = await self.available_versions()
        if not versions:
            return refused  # the model is not loaded at all: ModelUnavailable, as without a choice
        version = await self.version_of(choice)
        name = self.target.model_name
        if version is None:
            return VersionNotFound(not_served(choice, name, versions), detail=refused.detail)
        which = f"version {version}" if choice.label is None else f"{choice.describe()} (version {version})"
        s = info.signature
        return ModelFailed(
            f"{which} of model {name!r} does not take the requests the gateway sends (signature "
            f"{s.signature_name!r}, input {info.input_name!r}, output {info.output_name!r}, found in "
            "the latest version): the versions of a rollout must share one signature",
            detail=refused.detail,
        )

    async def _call(
        self,
        method: Any,
        request: object,
        timeout: float,
        name: str,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> Any:
        try:
            return await method(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            raise _gateway_error(e, name, self.target) from None


def _gateway_error(e: grpc.aio.AioRpcError, call: str, target: ServingTarget) -> GatewayError:
    # TF Serving's own words carry its address and the graph's node names: the log gets them,
    # the client gets what failed.
    code = e.code()
    detail = f"{call} to TF Serving at {target.address}: {code.name} {e.details() or ''}".rstrip()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelDeadlineExceeded(f"TF Serving did not answer {call} within the deadline", detail=detail)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ModelUnavailable("TF Serving is unavailable", detail=detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(f"TF Serving has no model {target.model_name!r} loaded", detail=detail)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return ModelRefused(f"TF Serving refused {call} ({code.name})", detail=detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ModelUnavailable("TF Serving is overloaded", detail=detail)
    return ModelFailed(f"TF Serving refused {call} ({code.name})", detail=detail)
