"""Classify, Regress and MultiInference, and TF Serving's REST forms, on TF Serving's own test
model (half_plus_two, rebuilt by `sample_models.write_half_plus_two`), against the server as a
process: TF Serving's official client on its gRPC port, plain httpx on its REST port.

This process never imports the server or the project's service stubs: their descriptors clash
with tensorflow_serving.apis' in one process.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from testing_support import sample_models
from testing_support.model_server_process import ServerProcess, write_config
from testing_support.ports import free_port

VERSION = 123


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store = tmp_path_factory.mktemp("testdata")
    # Zero-padded version folders, as in TF Serving's testdata.
    sample_models.write_half_plus_two(store / "half_plus_two" / "00000123", b=2.0)
    sample_models.write_half_plus_two(store / "half_plus_three" / "00000123", b=3.0)
    config = write_config(
        store / "models.config",
        {"default": store / "half_plus_two", "half_plus_three": store / "half_plus_three"},
    )
    flags = ["--model_config_file", str(config), "--rest_api_port", str(free_port())]
    with ServerProcess.start(flags) as process:
        yield process


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def rest(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=60) as client:
        yield client


def _examples(target: input_pb2.Input, *xs: float) -> None:
    for x in xs:
        target.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def _classify(signature: str, *xs: float, model: str = "default") -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    _examples(request.input, *xs)
    return request


def _regress(signature: str, *xs: float, model: str = "default") -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    _examples(request.input, *xs)
    return request


def _error(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


# --- gRPC, TF Serving's official client ----------------------------------------------------------


def test_classify_answers_scores_and_the_model_spec(stub: Any) -> None:
    response = stub.Classify(_classify("classify_x_to_y", 2.0, 4.0), timeout=60)
    assert [[(c.label, c.score) for c in r.classes] for r in response.result.classifications] == [
        [("", 3.0)],
        [("", 4.0)],
    ]
    assert response.model_spec.name == "default"
    assert response.model_spec.signature_name == "classify_x_to_y"
    assert response.model_spec.version.value == VERSION


def test_classify_answers_labels_from_a_classes_output(stub: Any) -> None:
    response = stub.Classify(_classify("classify_x_to_labels", 2.0), timeout=60)
    (only,) = response.result.classifications[0].classes
    assert (only.label, only.score) == ("3.000000", 3.0)


def test_regress_answers_one_value_per_example(stub: Any) -> None:
    response = stub.Regress(_regress("regress_x_to_y", 2.0, 3.0, 4.0), timeout=60)
    assert [r.value for r in response.result.regressions] == [3.0, 3.5, 4.0]
    assert response.model_spec.signature_name == "regress_x_to_y"
    assert response.model_spec.version.value == VERSION
    three = stub.Regress(_regress("regress_x_to_y", 2.0, model="half_plus_three"), timeout=60)
    assert [r.value for r in three.result.regressions] == [4.0]


def test_context_features_reach_every_example_and_an_examples_own_value_wins(stub: Any) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.append(2.0)
    with_context.examples.add()  # takes x from the context
    with_context.examples.add().features.feature["x"].float_list.value.append(6.0)
    response = stub.Regress(request, timeout=60)
    assert [r.value for r in response.result.regressions] == [3.0, 5.0]


def test_multi_inference_runs_each_task_on_the_same_examples(stub: Any) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y2", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
    _examples(request.input, 2.0)
    response = stub.MultiInference(request, timeout=60)
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[2].regression_result.regressions[0].value == 4.0
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value)
            for r in response.results] == [
        ("default", "regress_x_to_y", VERSION),
        ("default", "classify_x_to_y", VERSION),
        ("default", "regress_x_to_y2", VERSION),
    ]


def _multi(*tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    _examples(request.input, 2.0)
    return request


REGRESS, CLASSIFY = "tensorflow/serving/regress", "tensorflow/serving/classify"

# TF Serving's codes and messages (its classifier, regressor and multi-inference tests).
GRPC_ERRORS: dict[str, tuple[str, Any, grpc.StatusCode, str]] = {
    "unknown signature": (
        "Classify", _classify("nope", 2.0), grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    ),
    "a predict signature to Classify": (
        "Classify", _classify("", 2.0), grpc.StatusCode.INVALID_ARGUMENT,
        "No classification inputs found in SignatureDef: ",
    ),
    "a classify signature to Regress": (
        "Regress", _regress("classify_x_to_labels", 2.0), grpc.StatusCode.INVALID_ARGUMENT,
        "Expected one output Tensor.",
    ),
    "no examples": (
        "Regress", _regress("regress_x_to_y"), grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.",
    ),
    "a regression input that is not a string": (
        "Regress", _regress("regress_x2_to_y3", 2.0), grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but string is provided",
    ),
    "unknown model": (
        "Regress", _regress("regress_x_to_y", 2.0, model="nope"), grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "duplicate signature": (
        "MultiInference",
        _multi(("default", "regress_x_to_y", REGRESS), ("default", "regress_x_to_y", REGRESS)),
        grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y",
    ),
    "two models": (
        "MultiInference",
        _multi(("default", "regress_x_to_y", REGRESS), ("half_plus_three", "classify_x_to_y", CLASSIFY)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    ),
    "a predict task": (
        "MultiInference", _multi(("default", "serving_default", "tensorflow/serving/predict")),
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict",
    ),
    "signatures reading different inputs": (
        "MultiInference",
        _multi(("default", "regress_x_to_y", REGRESS), ("default", "regress_x2_to_y3", REGRESS)),
        grpc.StatusCode.INVALID_ARGUMENT, "Input tensor must be the same for all Signatures.",
    ),
    "a signature the model lacks": (
        "MultiInference", _multi(("default", "nope", REGRESS)),
        grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope",
    ),
}


@pytest.mark.parametrize("case", list(GRPC_ERRORS))
def test_grpc_errors_have_tf_servings_code_and_message(stub: Any, case: str) -> None:
    method, request, code, message = GRPC_ERRORS[case]
    got_code, details = _error(getattr(stub, method), request)
    assert got_code == code
    assert details.startswith(message), details


def test_a_missing_feature_is_tensorflows_parse_error(stub: Any) -> None:
    request = _regress("regress_x_to_y")
    request.input.example_list.examples.add().features.feature["other"].float_list.value.append(1.0)
    code, details = _error(stub.Regress, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Feature: x (data type: float) is required but could not be found." in details
    assert "{{node" not in details  # the graph's node names stay in the server's log


def _predict_x(*values: float, shape: list[int], output_filter: bool = True) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.extend(values)
    for size in shape:
        request.inputs["x"].tensor_shape.dim.add().size = size
    if output_filter:
        request.output_filter.append("y")
    return request


def test_predict_feeds_shapes_other_than_the_signatures_to_the_graph(stub: Any) -> None:
    # x is signed [-1,1]; TF Serving's suite sends [1], its REST example three values.
    for request, expected in (
        (_predict_x(2.0, shape=[1]), [3.0]),
        (_predict_x(2.0, shape=[1], output_filter=False), [3.0]),
        (_predict_x(2.0, 3.0, 4.0, shape=[3]), [3.0, 3.5, 4.0]),
        (_predict_x(2.0, shape=[1, 1]), [3.0]),
    ):
        response = stub.Predict(request, timeout=60)
        assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
        assert list(response.outputs["y"].float_val) == expected
        assert response.model_spec.signature_name == "serving_default"
        assert response.model_spec.version.value == VERSION


# --- REST, plain HTTP ------------------------------------------------------------------------------


def _serialized_example(x: float) -> bytes:
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(x)
    serialized: bytes = example.SerializeToString()
    return serialized


REST_ANSWERS: dict[str, tuple[str, Any, Any]] = {
    "row, scalars (TF Serving's documented example)": (
        ":predict", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]},
    ),
    "columnar, scalars": (":predict", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
    "row, lists": (":predict", {"instances": [[2.0], [4.0]]}, {"predictions": [[3.0], [4.0]]}),
    "row, named input": (":predict", {"instances": [{"x": 2.0}, {"x": 3.0}]}, {"predictions": [3.0, 3.5]}),
    "columnar, named input": (":predict", {"inputs": {"x": [[1.0]]}}, {"outputs": [[2.5]]}),
    "columnar, one scalar": (":predict", {"inputs": 2.0}, {"outputs": 3.0}),
    "integers for a float input": (":predict", {"instances": [2, 4]}, {"predictions": [3.0, 4.0]}),
    "signature_name and b64 strings (serialized examples to a classify signature)": (
        ":predict",
        {
            "signature_name": "classify_x_to_y",
            "instances": [{"b64": base64.b64encode(_serialized_example(2.0)).decode()}],
        },
        {"predictions": [[3.0]]},
    ),
    "classify (TF Serving's suite)": (
        ":classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
        {"results": [[["", 3.0]]]},
    ),
    "classify with labels": (
        ":classify",
        {"signature_name": "classify_x_to_labels", "examples": [{"x": 2.0}, {"x": [4.0]}]},
        {"results": [[["3.000000", 3.0]], [["4.000000", 4.0]]]},
    ),
    "regress (TF Serving's suite)": (
        ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, {"results": [3.0]},
    ),
    "regress with a context": (
        ":regress",
        {"signature_name": "regress_x_to_y2", "context": {"x": 1.0}, "examples": [{}, {"x": 3.0}]},
        {"results": [3.5, 4.5]},
    ),
}


@pytest.mark.parametrize("case", list(REST_ANSWERS))
def test_rest_forms_answer_as_tf_serving_does(rest: httpx.Client, case: str) -> None:
    verb, body, expected = REST_ANSWERS[case]
    response = rest.post(f"/v1/models/default{verb}", content=json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json() == expected


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


REST_ERRORS: dict[str, tuple[str, Any, int, str]] = {
    "classify without examples": (
        ":classify", {"signature_name": "classify_x_to_y"}, 400,
        'JSON Value: {"signature_name":"classify_x_to_y"} When method is classify, '
        "key 'examples' is expected and was not found",
    ),
    "examples not a list": (
        ":regress", {"examples": {"x": 1.0}}, 400,
        """JSON Value: {"examples":{"x":1.0}} Expecting 'examples' value to be an list/array""",
    ),
    "no examples": (
        ":regress", {"examples": []}, 400,
        """JSON Value: {"examples":[]} 'examples' value is an empty array""",
    ),
    "an example that is not an object": (
        ":regress", {"examples": [1.0]}, 400, "Example must be JSON object but got JSON Number",
    ),
    "mixed value kinds in one feature": (
        ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]}, 400,
        "Unexpected element type in feature: x expecting type: float",
    ),
    "a nested list in a feature": (
        ":regress", {"examples": [{"x": [[1.0]]}]}, 400,
        "Feature: x has element with unexpected JSON type: Array",
    ),
    "unknown signature": (
        ":classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
        "No signature was found with the name: nope",
    ),
    "an integer for a float feature (TensorFlow's parse error)": (
        ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}, 400,
        "Name: <unknown>, Key: x, Index: 0.  Data types don't match.",
    ),
    "JSON deeper than any tensor, for an input of any rank": (
        ":predict", {"instances": _nested(2.0, 66)}, 400,
        "input tensor x is nested 66 lists deep; a JSON input may have at most 64 dimensions",
    ),
    "wrong JSON type for a float input": (
        ":predict", {"instances": ["a"]}, 400, 'JSON Value: "a" Type: String is not of expected type: float',
    ),
    "unknown signature for predict": (
        ":predict", {"instances": [1.0], "signature_name": "nope"}, 400,
        'Serving signature name: "nope" not found in signature def',
    ),
}


@pytest.mark.parametrize("case", list(REST_ERRORS))
def test_rest_errors_have_tf_servings_status_and_message(rest: httpx.Client, case: str) -> None:
    verb, body, status, message = REST_ERRORS[case]
    response = rest.post(f"/v1/models/default{verb}", content=json.dumps(body))
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(message), response.text
