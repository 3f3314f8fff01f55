"""The gRPC front: TF Serving's PredictionService (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ModelService (GetModelStatus), and grpc.health.v1.

Method paths are TF Serving's (`/tensorflow.serving.PredictionService/Predict`, …), so its clients
and the project's TF-free stubs both work. `ServingError`s become gRPC statuses here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc
import numpy.typing as npt
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clothing_preproc import (
    array_to_tensor_proto,
    pack_signature_def_map,
    tensor_proto_to_array,
    tensor_shape,
)
from clothing_preproc.errors import TensorCodecError
from clothing_protos import prediction_service_pb2_grpc, serving_pb2, tensor_pb2
from model_server.core import ModelRef, ServingCore
from model_server.errors import InvalidArgument, ServingError
from model_server.inference import Method, TaskResult

log = logging.getLogger(__name__)

R = TypeVar("R")

# The services grpc.health.v1 answers for, besides "" (the whole server).
HEALTH_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def grpc_status(error: ServingError) -> grpc.StatusCode:
    """The one mapping from the core's codes to gRPC's (the numbers are the same)."""
    return grpc.StatusCode[error.code.name]


def model_ref(spec: serving_pb2.ModelSpec) -> ModelRef:
    choice = spec.WhichOneof("version_choice")
    return ModelRef(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
        signature_name=spec.signature_name,
    )


def _call(context: grpc.ServicerContext, method: str, body: Callable[[], R]) -> R:
    try:
        return body()
    except ServingError as e:
        context.abort(grpc_status(e), e.message)
        raise AssertionError("unreachable: abort raises") from None
    except Exception:
        # The catch-all: full traceback in the log, a generic message to the client.
        log.exception("%s failed", method)
        context.abort(grpc.StatusCode.INTERNAL, "Internal error in the model server")
        raise AssertionError("unreachable: abort raises") from None


def _describe(alias: str, proto: tensor_pb2.TensorProto) -> tuple[int, tuple[int, ...]]:
    """An input's dtype and shape from its header alone, for the signature check before decoding."""
    try:
        return int(proto.dtype), tensor_shape(proto)
    except TensorCodecError as e:
        raise InvalidArgument(f"tensor parsing error: {alias} ({e})") from e


def _decode(alias: str, proto: tensor_pb2.TensorProto) -> npt.NDArray[Any]:
    # The codec checks the header's sizes against what was sent and its bounds (element count,
    # decoded bytes, filling) before it allocates anything.
    try:
        return tensor_proto_to_array(proto)
    except TensorCodecError as e:
        # TF Serving's message, with the reason it leaves out.
        raise InvalidArgument(f"tensor parsing error: {alias} ({e})") from e


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore, tensor_content: bool) -> None:
        self._core = core
        self._tensor_content = tensor_content

    def Predict(
        self, request: serving_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> serving_pb2.PredictResponse:
        def body() -> serving_pb2.PredictResponse:
            ref = model_ref(request.model_spec) if request.HasField("model_spec") else None
            result = self._core.predict(
                ref, request.inputs, list(request.output_filter), _decode, _describe
            )
            response = serving_pb2.PredictResponse()
            response.model_spec.name = result.model_name
            response.model_spec.version.value = result.version
            response.model_spec.signature_name = result.signature_name
            for alias, array in result.outputs.items():
                response.outputs[alias].CopyFrom(
                    array_to_tensor_proto(array, as_content=self._tensor_content)
                )
            return response

        return _call(context, "Predict", body)

    def GetModelMetadata(
        self, request: serving_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelMetadataResponse:
        def body() -> serving_pb2.GetModelMetadataResponse:
            ref = model_ref(request.model_spec) if request.HasField("model_spec") else None
            meta = self._core.metadata(ref, list(request.metadata_field))
            response = serving_pb2.GetModelMetadataResponse()
            response.model_spec.name = meta.model_name
            response.model_spec.version.value = meta.version
            response.metadata["signature_def"].CopyFrom(pack_signature_def_map(meta.signature_defs))
            return response

        return _call(context, "GetModelMetadata", body)


    def Classify(
        self, request: serving_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> serving_pb2.ClassificationResponse:
        def body() -> serving_pb2.ClassificationResponse:
            ref = model_ref(request.model_spec) if request.HasField("model_spec") else None
            result = self._core.classify(ref, request.input)
            (task,) = result.tasks
            response = serving_pb2.ClassificationResponse()
            _fill_spec(response.model_spec, result.model_name, result.version, task.signature_name)
            _fill_classifications(response.result, task)
            return response

        return _call(context, "Classify", body)

    def Regress(
        self, request: serving_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> serving_pb2.RegressionResponse:
        def body() -> serving_pb2.RegressionResponse:
            ref = model_ref(request.model_spec) if request.HasField("model_spec") else None
            result = self._core.regress(ref, request.input)
            (task,) = result.tasks
            response = serving_pb2.RegressionResponse()
            _fill_spec(response.model_spec, result.model_name, result.version, task.signature_name)
            _fill_regressions(response.result, task)
            return response

        return _call(context, "Regress", body)

    def MultiInference(
        self, request: serving_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> serving_pb2.MultiInferenceResponse:
        def body() -> serving_pb2.MultiInferenceResponse:
            tasks = [(model_ref(t.model_spec), t.method_name) for t in request.tasks]
            result = self._core.multi_inference(tasks, request.input)
            response = serving_pb2.MultiInferenceResponse()
            for task in result.tasks:
                entry = response.results.add()
                _fill_spec(entry.model_spec, result.model_name, result.version, task.signature_name)
                if task.method is Method.CLASSIFY:
                    _fill_classifications(entry.classification_result, task)
                else:
                    _fill_regressions(entry.regression_result, task)
            return response

        return _call(context, "MultiInference", body)


def _fill_spec(spec: serving_pb2.ModelSpec, name: str, version: int, signature_name: str) -> None:
    # TF Serving's MakeModelSpec: the signature the request ran, serving_default if it named none.
    spec.name = name
    spec.version.value = version
    spec.signature_name = signature_name


def _fill_classifications(result: serving_pb2.ClassificationResult, task: TaskResult) -> None:
    for row in task.classifications or []:
        classifications = result.classifications.add()
        for label, score in row:
            classifications.classes.add(label=label, score=score)


def _fill_regressions(result: serving_pb2.RegressionResult, task: TaskResult) -> None:
    for value in task.regressions or []:
        result.regressions.add(value=value)


class ModelServicer(prediction_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def GetModelStatus(
        self, request: serving_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelStatusResponse:
        def body() -> serving_pb2.GetModelStatusResponse:
            ref = model_ref(request.model_spec) if request.HasField("model_spec") else None
            response = serving_pb2.GetModelStatusResponse()
            for status in self._core.status(ref):
                entry = response.model_version_status.add(version=status.version, state=int(status.state))
                entry.status.error_code = int(status.error_code)  # type: ignore[assignment]
                entry.status.error_message = status.error_message
            return response

        return _call(context, "GetModelStatus", body)


class GrpcFront:
    """The gRPC server: bound at construction (so the real port is known), started by `start`."""

    def __init__(
        self,
        core: ServingCore,
        address: str,
        port: int,
        *,
        max_request_bytes: int,
        max_concurrent_requests: int,
        tensor_content: bool,
        socket_path: str | None = None,
        channel_arguments: Sequence[tuple[str, int | str]] = (),
        health_service: bool = True,
    ) -> None:
        self._core = core
        # Threads: every admitted Predict, plus room for status, metadata and health calls, which
        # must keep answering while Predict is saturated. gRPC refuses beyond that with
        # RESOURCE_EXHAUSTED instead of queueing.
        workers = max_concurrent_requests + 8
        options: dict[str, int | str] = {
            "grpc.max_receive_message_length": max_request_bytes,
            "grpc.max_send_message_length": -1,
            "grpc.so_reuseport": 0,
        }
        # --grpc_channel_arguments, as TF Serving passes them to its ServerBuilder: after the
        # server's own, so the same key given there wins.
        options.update(dict(channel_arguments))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=list(options.items()),
            maximum_concurrent_rpcs=workers,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(core, tensor_content), self.server
        )
        prediction_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        if health_service:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.update_health()
        target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        try:
            self.port = self.server.add_insecure_port(target)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {target} (gRPC): {e}") from None
        if self.port == 0:
            raise OSError(f"cannot listen on {target} (gRPC): address in use or not available")
        self.socket_path = socket_path
        if socket_path:
            # gRPC replaces a socket file left at that path, as TF Serving's server does.
            try:
                bound = self.server.add_insecure_port(f"unix:{socket_path}")
            except RuntimeError as e:
                raise OSError(f"cannot listen on unix:{socket_path} (gRPC): {e}") from None
            if not bound:
                raise OSError(f"cannot listen on unix:{socket_path} (gRPC): path not usable")

    def start(self) -> None:
        self.server.start()

    def update_health(self) -> None:
        """SERVING only while every model has an AVAILABLE version and the server is not draining."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._core.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *HEALTH_SERVICES):
            self.health.set(service, status)

    def stop(self, grace: float) -> None:
        """Stop accepting calls; calls in flight get `grace` seconds."""
        self.server.stop(grace).wait()
