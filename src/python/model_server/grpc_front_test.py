"""The gRPC front against real servers on loopback, with the project's TF-free stubs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array, unpack_signature_def_map
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2, tensor_pb2
from model_server.server import ModelServer
from testing_support import sample_models
from testing_support.model_server_process import write_config


class Client:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict
        self.metadata = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).GetModelMetadata
        self.status = prediction_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus
        self.health = health_pb2_grpc.HealthStub(self.channel).Check


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, model_store: Path
) -> Iterator[tuple[ModelServer, Client]]:
    from model_server.settings import parse_settings

    config = write_config(
        tmp_path_factory.mktemp("config") / "models.config",
        {"tiny": model_store / "tiny", "two": model_store / "two", "plain": model_store / "plain"},
    )
    server = ModelServer(
        parse_settings(["--port", "0", "--bind_address", "127.0.0.1", "--model_config_file", str(config)], {})
    )
    server.start()
    # "plain" never becomes AVAILABLE, so wait for the other two by asking.
    client = Client(server.grpc_port)
    _wait_for(
        lambda: server.manager.served()
        and len(server.manager.served()) == 2
        and server.manager.status("plain")[0].state.name == "END"
    )
    yield server, client
    client.channel.close()
    server.stop(drain_seconds=1)


def _wait_for(condition: Callable[[], object], timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def image_request(
    model: str = "tiny", images: np.ndarray | None = None, **spec: Any
) -> serving_pb2.PredictRequest:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    if "signature" in spec:
        request.model_spec.signature_name = spec["signature"]
    array = sample_models.random_images(2) if images is None else images
    request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(array))
    return request


def error_of(call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


def test_predict_matches_the_saved_model_run_directly(
    served: tuple[ModelServer, Client], model_store: Path
) -> None:
    _, client = served
    images = sample_models.random_images(3, seed=7)
    response = client.predict(image_request(images=images), timeout=60)
    run = sample_models.run_saved_model(model_store / "tiny" / "2", {COURSE_INPUT_NAME: images})
    expected = run[COURSE_OUTPUT_NAME]
    np.testing.assert_array_equal(tensor_proto_to_array(response.outputs[COURSE_OUTPUT_NAME]), expected)
    # TF Serving's defaults: the highest version, serving_default, values in float_val.
    assert response.model_spec.name == "tiny"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    assert len(response.outputs[COURSE_OUTPUT_NAME].float_val) == 30
    assert not response.outputs[COURSE_OUTPUT_NAME].tensor_content


def test_specific_version_is_served(served: tuple[ModelServer, Client], model_store: Path) -> None:
    _, client = served
    # The latest policy serves only the highest version: version 1 is not AVAILABLE.
    assert error_of(client.predict, image_request(version=1)) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(tiny, 1)",
    )
    response = client.predict(image_request(version=2), timeout=60)
    assert response.model_spec.version.value == 2


def test_multi_input_signature_and_output_filter(served: tuple[ModelServer, Client]) -> None:
    _, client = served
    request = serving_pb2.PredictRequest()
    request.model_spec.name = "two"
    request.inputs["a"].CopyFrom(array_to_tensor_proto(np.array([[1, 2, 3], [0.5, 0.5, 0]], np.float32)))
    request.inputs["b"].CopyFrom(array_to_tensor_proto(np.array([10, -1], np.int64)))
    both = client.predict(request, timeout=60)
    assert set(both.outputs) == {"sum", "scaled"}
    np.testing.assert_array_equal(tensor_proto_to_array(both.outputs["sum"]), [16.0, 0.0])
    request.output_filter.append("scaled")
    only = client.predict(request, timeout=60)
    assert set(only.outputs) == {"scaled"}
    np.testing.assert_array_equal(tensor_proto_to_array(only.outputs["scaled"]), [[2, 4, 6], [1, 1, 0]])


def _missing_spec() -> serving_pb2.PredictRequest:
    request = image_request()
    request.ClearField("model_spec")
    return request


def _with_extra_input() -> serving_pb2.PredictRequest:
    request = image_request()
    request.inputs["extra"].CopyFrom(array_to_tensor_proto(np.zeros((2, 3), np.float32)))
    return request


def _renamed_input() -> serving_pb2.PredictRequest:
    request = image_request()
    request.inputs["image"].CopyFrom(request.inputs.pop(COURSE_INPUT_NAME))
    return request


def _with_filter(name: str) -> serving_pb2.PredictRequest:
    request = image_request()
    request.output_filter.append(name)
    return request


def _bad_tensor() -> serving_pb2.PredictRequest:
    request = image_request()
    request.inputs[COURSE_INPUT_NAME].tensor_content = b"\x00" * 10  # not 2·299·299·3 floats
    return request


def _header_only(
    alias: str = COURSE_INPUT_NAME,
    dtype: int = tensor_pb2.DT_COMPLEX128,
    shape: tuple[int, ...] = (1 << 26,),
    **values: Any,
) -> serving_pb2.PredictRequest:
    """A few bytes declaring a huge tensor (issue 17: 67 bytes used to cost the server 1 GB)."""
    request = serving_pb2.PredictRequest()
    request.model_spec.name = "tiny" if alias == COURSE_INPUT_NAME else "two"
    tensor = tensor_pb2.TensorProto(dtype=dtype, **values)  # type: ignore[arg-type]
    tensor.tensor_shape.dim.extend(tensor_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    request.inputs[alias].CopyFrom(tensor)
    if alias != COURSE_INPUT_NAME:
        request.inputs["b" if alias == "a" else "a"].CopyFrom(
            array_to_tensor_proto(np.zeros(1, np.int64) if alias == "a" else np.zeros((1, 3), np.float32))
        )
    return request


# Every row of TF Serving's error table (tfserving-api.md), plus the checks it leaves to chance.
PREDICT_ERRORS: dict[str, tuple[Callable[[], serving_pb2.PredictRequest], grpc.StatusCode, str]] = {
    "unknown model": (
        lambda: image_request(model="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        lambda: image_request(version=9),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(tiny, 9)",
    ),
    "unknown label": (
        lambda: image_request(label="canary"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: canary",
    ),
    "missing model_spec": (_missing_spec, grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    "unknown signature": (
        lambda: image_request(signature="x"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "x" not found.',
    ),
    "wrong number of inputs": (
        _with_extra_input,
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 2!=1 "
        f"len({{extra,{COURSE_INPUT_NAME}}}) != len({{{COURSE_INPUT_NAME}}}). "
        "Sent extra: {extra}. Missing but required: {}.",
    ),
    "wrong input name": (
        _renamed_input,
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: image. "
        f"Inputs expected to be in the set {{{COURSE_INPUT_NAME}}}.",
    ),
    "wrong dtype": (
        lambda: image_request(images=sample_models.random_images(1).astype(np.float64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but double is provided",
    ),
    "unknown output_filter": (
        lambda: _with_filter("logits"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: logits "
        f"Outputs expected to be in the set {{{COURSE_OUTPUT_NAME}}}.",
    ),
    "wrong rank for a placeholder (would abort oneDNN's Conv2D)": (
        lambda: image_request(images=sample_models.random_images(1)[0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input tensor {COURSE_INPUT_NAME} has shape [299,299,3], but the model's input takes [-1,299,299,3] "
        "(-1 = any size)",
    ),
    "wrong image size for a placeholder": (
        lambda: image_request(images=np.zeros((1, 150, 150, 3), np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input tensor {COURSE_INPUT_NAME} has shape [1,150,150,3], "
        "but the model's input takes [-1,299,299,3] (-1 = any size)",
    ),
    "hostile header: complex128 [2^26], one value": (
        lambda: _header_only(dcomplex_val=[1.0, 2.0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but complex128 is provided",
    ),
    "hostile header: string [2^26], one value": (
        lambda: _header_only(dtype=tensor_pb2.DT_STRING, string_val=[b"x"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but string is provided",
    ),
    "hostile header: rank 1 for an image input": (
        lambda: _header_only(dtype=tensor_pb2.DT_FLOAT, float_val=[1.0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input tensor {COURSE_INPUT_NAME} has shape [67108864], "
        "but the model's input takes [-1,299,299,3] (-1 = any size)",
    ),
    "hostile header: 300 dimensions": (
        lambda: _header_only(dtype=tensor_pb2.DT_FLOAT, shape=(1,) * 300),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"tensor parsing error: {COURSE_INPUT_NAME} (tensor has 300 dimensions; at most 254 are allowed)",
    ),
    "hostile header: a batch of 64 images in one value": (
        lambda: _header_only(dtype=tensor_pb2.DT_FLOAT, shape=(64, 299, 299, 3), float_val=[0.5]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"tensor parsing error: {COURSE_INPUT_NAME} (tensor of shape [64, 299, 299, 3] of float32 "
        "carries 1 of its 17164992 values; filling in the rest would take 68659968 bytes, "
        "and the limit for a tensor sent incomplete is 4194304 (send every value))",
    ),
    "hostile header: int64 [2^26] in one value, dtype and rank right": (
        lambda: _header_only("b", tensor_pb2.DT_INT64, int64_val=[1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: b (tensor of shape [67108864] of int64 carries 1 of its 67108864 values; "
        "filling in the rest would take 536870912 bytes, and the limit for a tensor sent incomplete is "
        "4194304 (send every value))",
    ),
    "hostile header: tensor_content shorter than the shape": (
        lambda: _header_only("a", tensor_pb2.DT_FLOAT, (1 << 24, 3), tensor_content=b"\x00" * 12),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: a (tensor_content has 12 bytes; shape [16777216, 3] of float32 "
        "needs 201326592)",
    ),
    "undecodable tensor": (
        _bad_tensor,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"tensor parsing error: {COURSE_INPUT_NAME} (tensor_content has 10 bytes; "
        "shape [2, 299, 299, 3] of float32 needs 2145624)",
    ),
}


@pytest.mark.parametrize("case", list(PREDICT_ERRORS))
def test_predict_errors_have_tf_servings_code_and_message(
    served: tuple[ModelServer, Client], case: str
) -> None:
    _, client = served
    make, code, message = PREDICT_ERRORS[case]
    request = make()
    assert error_of(client.predict, request) == (code, message)


def test_model_run_errors_name_the_cause_not_the_graphs_nodes(
    served: tuple[ModelServer, Client], caplog: pytest.LogCaptureFixture
) -> None:
    # Batch sizes that pass the signature check (both -1) but do not add up in the graph.
    _, client = served
    request = serving_pb2.PredictRequest()
    request.model_spec.name = "two"
    request.inputs["a"].CopyFrom(array_to_tensor_proto(np.zeros((2, 3), np.float32)))
    request.inputs["b"].CopyFrom(array_to_tensor_proto(np.zeros(3, np.int64)))
    with caplog.at_level("WARNING", logger="model_server.saved_model"):
        code, message = error_of(client.predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "Incompatible shapes: [3] vs. [2]"
    # The detail (which node, where it was built) is in the server's log only.
    assert any("node" in record.getMessage() for record in caplog.records)


def test_a_plain_tf_saved_model_save_export_is_rejected_at_load(served: tuple[ModelServer, Client]) -> None:
    _, client = served
    request = serving_pb2.GetModelStatusRequest()
    request.model_spec.name = "plain"
    (status,) = client.status(request, timeout=10).model_version_status
    assert status.version == 1
    assert status.state == serving_pb2.ModelVersionStatus.END
    assert status.status.error_code == serving_pb2.ErrorCode.FAILED_PRECONDITION
    assert status.status.error_message.startswith("Could not find variable")
    predict = image_request(model="plain")
    assert error_of(client.predict, predict) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(plain)",
    )


def test_model_status(served: tuple[ModelServer, Client]) -> None:
    _, client = served
    request = serving_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    (status,) = client.status(request, timeout=10).model_version_status
    assert (status.version, status.state, status.status.error_code) == (
        2,
        serving_pb2.ModelVersionStatus.AVAILABLE,
        serving_pb2.ErrorCode.OK,
    )
    request.model_spec.name = "nope"
    assert error_of(client.status, request) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    request.model_spec.name = "tiny"
    request.model_spec.version.value = 5
    assert error_of(client.status, request) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 5 of model tiny",
    )
    assert error_of(client.status, serving_pb2.GetModelStatusRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )


def test_model_metadata(served: tuple[ModelServer, Client]) -> None:
    _, client = served
    request = serving_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = client.metadata(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.version.value) == ("tiny", 2)
    signature = unpack_signature_def_map(response.metadata["signature_def"]).signature_def["serving_default"]
    assert [d.size for d in signature.inputs[COURSE_INPUT_NAME].tensor_shape.dim] == [-1, 299, 299, 3]
    assert signature.outputs[COURSE_OUTPUT_NAME].dtype == tensor_pb2.DT_FLOAT
    request.metadata_field[:] = ["labels"]
    assert error_of(client.metadata, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field labels is not supported",
    )
    request.ClearField("metadata_field")
    assert error_of(client.metadata, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    assert error_of(
        client.metadata, serving_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_health_is_serving_only_when_every_model_is_available(
    start_server: Callable[..., ModelServer], model_copy: Callable[[str, int, int], Path], tmp_path: Path
) -> None:
    version = model_copy("tiny", 1, 1)
    server = start_server(
        "--model_name",
        "m",
        "--model_base_path",
        str(version.parent),
        "--file_system_poll_wait_seconds",
        "0.1",
        "--rest_api_port",
        "0",
    )
    health = Client(server.grpc_port).health
    assert (
        health(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    )
    service = health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService")
    assert health(service, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    # Taking the only version away: nothing to serve, not ready.
    import shutil

    shutil.rmtree(version)
    _wait_for(
        lambda: health(health_pb2.HealthCheckRequest(), timeout=10).status
        == health_pb2.HealthCheckResponse.NOT_SERVING,
        timeout=30,
    )


def test_tensor_content_responses_behind_tf_servings_flag(
    start_server: Callable[..., ModelServer], model_store: Path
) -> None:
    server = start_server(
        "--model_name",
        "tiny",
        "--model_base_path",
        str(model_store / "tiny"),
        "--enable_serialization_as_tensor_content",
    )
    images = sample_models.random_images(2, seed=3)
    response = Client(server.grpc_port).predict(image_request(images=images), timeout=60)
    out = response.outputs[COURSE_OUTPUT_NAME]
    assert len(out.tensor_content) == 2 * 10 * 4
    assert not out.float_val
    run = sample_models.run_saved_model(model_store / "tiny" / "2", {COURSE_INPUT_NAME: images})
    expected = run[COURSE_OUTPUT_NAME]
    np.testing.assert_array_equal(tensor_proto_to_array(out), expected)


def test_overload_is_refused_at_once_not_queued(
    start_server: Callable[..., ModelServer], model_store: Path, tmp_path: Path
) -> None:
    # A batch that waits 30 s for company holds the only admission slot; the next call must not wait.
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 30000000 }\n")
    server = start_server(
        "--model_name",
        "tiny",
        "--model_base_path",
        str(model_store / "tiny"),
        "--batching_parameters_file",
        str(params),
        "--max_concurrent_requests",
        "1",
        "--enable_model_warmup",
        "false",
    )
    client = Client(server.grpc_port)
    held = client.predict.future(image_request(), timeout=60)
    _wait_for(lambda: server.core.in_flight == 1, timeout=30)
    assert error_of(client.predict, image_request()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Too many requests in flight: the limit is 1 (--max_concurrent_requests)",
    )
    # Draining (SIGTERM): new calls are UNAVAILABLE, the held one runs at once and completes.
    server.begin_drain()
    assert error_of(client.predict, image_request()) == (
        grpc.StatusCode.UNAVAILABLE,
        "The model server is shutting down",
    )
    assert held.result().outputs[COURSE_OUTPUT_NAME].tensor_shape.dim[0].size == 2


def test_oversized_messages_are_resource_exhausted(
    start_server: Callable[..., ModelServer], model_store: Path
) -> None:
    server = start_server(
        "--model_name",
        "tiny",
        "--model_base_path",
        str(model_store / "tiny"),
        "--max_request_bytes",
        "1000000",
    )
    code, message = error_of(Client(server.grpc_port).predict, image_request())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in message


def test_the_health_service_is_off_with_tf_servings_flag_false(
    start_server: Callable[..., ModelServer], model_store: Path
) -> None:
    server = start_server(
        "--model_name", "tiny", "--model_base_path", str(model_store / "tiny"),
        "--enable_grpc_healthcheck_service=false",
    )
    client = Client(server.grpc_port)
    with pytest.raises(grpc.RpcError) as caught:
        client.health(health_pb2.HealthCheckRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert client.predict(image_request(), timeout=60).model_spec.version.value == 2
