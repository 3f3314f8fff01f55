"""TF Serving's own client (tensorflow_serving.apis) against the server running as a process.

This process never imports the server or the project's service stubs: their gRPC descriptors
clash with tensorflow_serving.apis' in one process (toolchain.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from testing_support import sample_models
from testing_support.model_server_process import ServerProcess, write_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("config") / "models.config",
        {"tiny": model_store / "tiny", "two": model_store / "two"},
    )
    with ServerProcess.start(["--model_config_file", str(config)]) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def test_official_predict_matches_the_saved_model(channel: grpc.Channel, model_store: Path) -> None:
    images = sample_models.random_images(2, seed=21)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "serving_default"
    request.inputs[COURSE_INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    run = sample_models.run_saved_model(model_store / "tiny" / "2", {COURSE_INPUT_NAME: images})
    expected = run[COURSE_OUTPUT_NAME]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs[COURSE_OUTPUT_NAME]), expected)
    assert response.model_spec.version.value == 2


def test_official_predict_with_two_inputs(channel: grpc.Channel) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "two"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2, 3]], np.float32)))
    request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([5], np.int64)))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    assert tf.make_ndarray(response.outputs["sum"]).tolist() == [11.0]


def test_official_metadata_unpacks_to_tf_servings_signature_def_map(channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
        request, timeout=10
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert [d.size for d in signature.outputs[COURSE_OUTPUT_NAME].tensor_shape.dim] == [-1, 10]


def test_official_model_status(channel: grpc.Channel) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def test_official_client_sees_tf_servings_error(channel: grpc.Channel) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs[COURSE_INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.zeros((1, 299, 299, 3))))  # float64
    with pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Expects arg[0] to be float but double is provided"
