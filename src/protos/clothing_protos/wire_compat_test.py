"""The project's stubs against the official TF Serving / TensorFlow protos, on the wire.

Messages go both ways: bytes written by one side parse on the other to the same values and
serialize back to the same bytes. The service descriptors cannot be imported next to TensorFlow's
(both declare `tensorflow.serving.PredictionService`), so they are compared across processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2
from tensorflow.core.protobuf import meta_graph_pb2 as tf_meta_graph_pb2
from tensorflow_serving.apis import classification_pb2 as tf_classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as tf_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2 as tf_status_pb2
from tensorflow_serving.apis import inference_pb2 as tf_inference_pb2
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2
from tensorflow_serving.apis import prediction_log_pb2 as tf_log_pb2
from tensorflow_serving.apis import regression_pb2 as tf_regression_pb2

from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from clothing_protos import example_pb2, input_pb2, serving_pb2, tensor_pb2
from testing_support.sample_signatures import image_signature_def

names = st.text(min_size=0, max_size=12)
dims = st.lists(st.integers(min_value=-1, max_value=2**40), max_size=5)


@st.composite
def tensors(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    dtypes = [tensor_pb2.DT_FLOAT, tensor_pb2.DT_DOUBLE, tensor_pb2.DT_INT32, tensor_pb2.DT_UINT8,
              tensor_pb2.DT_STRING, tensor_pb2.DT_INT64, tensor_pb2.DT_BOOL, tensor_pb2.DT_HALF]
    t = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(dtypes)))
    for size in draw(dims):
        t.tensor_shape.dim.add(size=size, name=draw(st.sampled_from(["", "batch"])))
    t.tensor_shape.unknown_rank = draw(st.booleans())
    t.tensor_content = draw(st.binary(max_size=64))
    t.float_val.extend(draw(st.lists(st.floats(width=32, allow_nan=False), max_size=8)))
    t.double_val.extend(draw(st.lists(st.floats(allow_nan=False), max_size=4)))
    t.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4)))
    t.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
    t.string_val.extend(draw(st.lists(st.binary(max_size=8), max_size=3)))
    t.bool_val.extend(draw(st.lists(st.booleans(), max_size=3)))
    t.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=3)))
    t.uint32_val.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)))
    t.uint64_val.extend(draw(st.lists(st.integers(0, 2**64 - 1), max_size=3)))
    return t


@st.composite
def model_specs(draw: st.DrawFn) -> serving_pb2.ModelSpec:
    spec = serving_pb2.ModelSpec(name=draw(names), signature_name=draw(names))
    choice = draw(st.sampled_from(["none", "version", "label"]))
    if choice == "version":
        spec.version.value = draw(st.integers(0, 2**63 - 1))
    elif choice == "label":
        spec.version_label = draw(names)
    return spec


@st.composite
def predict_requests(draw: st.DrawFn) -> serving_pb2.PredictRequest:
    request = serving_pb2.PredictRequest(model_spec=draw(model_specs()))
    for key in draw(st.lists(names, max_size=3, unique=True)):
        request.inputs[key].CopyFrom(draw(tensors()))
    request.output_filter.extend(draw(st.lists(names, max_size=3)))
    return request


def as_dict(message: Message) -> dict[str, object]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def assert_same_both_ways(ours: Message, official_type: type[Message]) -> None:
    wire = ours.SerializeToString(deterministic=True)
    official = official_type.FromString(wire)
    assert as_dict(official) == as_dict(ours)
    back = type(ours).FromString(official.SerializeToString(deterministic=True))
    assert back == ours


@settings(max_examples=200, deadline=None)
@given(predict_requests())
def test_predict_request_round_trips_through_tf_serving_apis(request: serving_pb2.PredictRequest) -> None:
    assert_same_both_ways(request, tf_predict_pb2.PredictRequest)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(names, tensors(), max_size=3), model_specs())
def test_predict_response_round_trips(
    outputs: dict[str, tensor_pb2.TensorProto], spec: serving_pb2.ModelSpec) -> None:
    response = serving_pb2.PredictResponse(model_spec=spec)
    for key, tensor in outputs.items():
        response.outputs[key].CopyFrom(tensor)
    assert_same_both_ways(response, tf_predict_pb2.PredictResponse)


@settings(max_examples=100, deadline=None)
@given(tensors())
def test_tensor_proto_matches_tensorflow_framework(tensor: tensor_pb2.TensorProto) -> None:
    assert_same_both_ways(tensor, tf_tensor_pb2.TensorProto)


def test_signature_def_matches_meta_graph() -> None:
    signature = image_signature_def(COURSE_INPUT_NAME, COURSE_OUTPUT_NAME)
    assert_same_both_ways(signature, tf_meta_graph_pb2.SignatureDef)


def test_model_metadata_any_is_read_by_official_client() -> None:
    # What the local server sends: the Any must carry TF Serving's type name, not ours.
    sig_map = serving_pb2.SignatureDefMap()
    signature = image_signature_def(COURSE_INPUT_NAME, COURSE_OUTPUT_NAME)
    sig_map.signature_def["serving_default"].CopyFrom(signature)
    response = serving_pb2.GetModelMetadataResponse()
    response.model_spec.name = COURSE_MODEL_NAME
    response.model_spec.version.value = 1
    any_value = response.metadata["signature_def"]
    any_value.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    any_value.value = sig_map.SerializeToString()

    official = tf_metadata_pb2.GetModelMetadataResponse.FromString(response.SerializeToString())
    unpacked = tf_metadata_pb2.SignatureDefMap()
    assert official.metadata["signature_def"].Unpack(unpacked)
    sig = unpacked.signature_def["serving_default"]
    assert list(sig.inputs) == [COURSE_INPUT_NAME]
    assert [d.size for d in sig.inputs[COURSE_INPUT_NAME].tensor_shape.dim] == [-1, 299, 299, 3]
    assert sig.outputs[COURSE_OUTPUT_NAME].dtype == tf_types_pb2.DT_FLOAT


def test_model_status_round_trips() -> None:
    response = serving_pb2.GetModelStatusResponse()
    status = response.model_version_status.add(version=3, state=serving_pb2.ModelVersionStatus.AVAILABLE)
    status.status.error_code = serving_pb2.ErrorCode.OK
    failed = response.model_version_status.add(version=4, state=serving_pb2.ModelVersionStatus.END)
    failed.status.error_code = serving_pb2.ErrorCode.FAILED_PRECONDITION
    failed.status.error_message = "Could not find variable dense/kernel"
    assert_same_both_ways(response, tf_status_pb2.GetModelStatusResponse)
    # The REST status body uses these JSON names (tfserving-api.md).
    body = json_format.MessageToDict(response)
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][1]["status"]["error_message"].startswith("Could not")


def test_warmup_prediction_log_round_trips() -> None:
    log = serving_pb2.PredictionLog()
    log.log_metadata.model_spec.name = COURSE_MODEL_NAME
    log.log_metadata.saved_model_tags.append("serve")
    request = log.predict_log.request
    request.model_spec.name = COURSE_MODEL_NAME
    request.model_spec.signature_name = "serving_default"
    request.inputs[COURSE_INPUT_NAME].CopyFrom(tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT))
    assert_same_both_ways(log, tf_log_pb2.PredictionLog)


@st.composite
def features(draw: st.DrawFn) -> example_pb2.Features:
    out = example_pb2.Features()
    for key in draw(st.lists(names, max_size=3, unique=True)):
        feature = out.feature[key]
        kind = draw(st.sampled_from(["bytes", "float", "int64", "none"]))
        if kind == "bytes":
            feature.bytes_list.value.extend(draw(st.lists(st.binary(max_size=8), max_size=3)))
        elif kind == "float":
            feature.float_list.value.extend(draw(st.lists(st.floats(width=32, allow_nan=False), max_size=3)))
        elif kind == "int64":
            feature.int64_list.value.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)))
    return out


@st.composite
def inputs(draw: st.DrawFn) -> input_pb2.Input:
    out = input_pb2.Input()
    examples = draw(st.lists(features(), max_size=3))
    if draw(st.booleans()):
        out.example_list_with_context.context.features.CopyFrom(draw(features()))
        target = out.example_list_with_context.examples
    else:
        target = out.example_list.examples
    for example in examples:
        target.add().features.CopyFrom(example)
    return out


@settings(max_examples=100, deadline=None)
@given(model_specs(), inputs())
def test_classify_and_regress_requests_round_trip(
    spec: serving_pb2.ModelSpec, input_: input_pb2.Input
) -> None:
    assert_same_both_ways(
        serving_pb2.ClassificationRequest(model_spec=spec, input=input_),
        tf_classification_pb2.ClassificationRequest,
    )
    assert_same_both_ways(
        serving_pb2.RegressionRequest(model_spec=spec, input=input_), tf_regression_pb2.RegressionRequest
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(model_specs(), names), max_size=3), inputs())
def test_multi_inference_request_round_trips(
    tasks: list[tuple[serving_pb2.ModelSpec, str]], input_: input_pb2.Input
) -> None:
    request = serving_pb2.MultiInferenceRequest(input=input_)
    for spec, method in tasks:
        request.tasks.add(model_spec=spec, method_name=method)
    assert_same_both_ways(request, tf_inference_pb2.MultiInferenceRequest)


def test_classify_regress_and_multi_inference_responses_round_trip() -> None:
    classify = serving_pb2.ClassificationResponse()
    classify.model_spec.name = "default"
    classify.model_spec.version.value = 123
    classify.result.classifications.add().classes.add(label="3.000000", score=3.0)
    assert_same_both_ways(classify, tf_classification_pb2.ClassificationResponse)
    regress = serving_pb2.RegressionResponse()
    regress.result.regressions.add(value=3.5)
    assert_same_both_ways(regress, tf_regression_pb2.RegressionResponse)
    multi = serving_pb2.MultiInferenceResponse()
    multi.results.add().regression_result.CopyFrom(regress.result)
    multi.results.add().classification_result.CopyFrom(classify.result)
    multi.results[1].model_spec.signature_name = "classify_x_to_y"
    assert_same_both_ways(multi, tf_inference_pb2.MultiInferenceResponse)


_DESCRIBE_SERVICES = """
import json, sys, importlib
official = sys.argv[1] == "official"
if official:
    from tensorflow_serving.apis import prediction_service_pb2 as p, model_service_pb2 as m
    files = [p.DESCRIPTOR, m.DESCRIPTOR]
else:
    from clothing_protos import prediction_service_pb2 as p, prediction_service_pb2_grpc  # noqa: F401
    files = [p.DESCRIPTOR]
paths = {}
for f in files:
    for service in f.services_by_name.values():
        for method in service.methods:
            paths[f"/{service.full_name}/{method.name}"] = [
                method.input_type.name, method.output_type.name]
print(json.dumps(paths))
"""


def _method_paths(side: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _DESCRIBE_SERVICES, side],
        check=True, capture_output=True, text=True, timeout=120,
        # The child sees the same requirements and generated code as this test.
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_service_method_paths_are_tf_servings() -> None:
    ours = _method_paths("ours")
    official = _method_paths("official")
    assert set(ours) == {
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.PredictionService/Regress",
        "/tensorflow.serving.PredictionService/MultiInference",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
    }
    for path, types in ours.items():
        # Same path, and the same message (by short name) on each side of the call.
        assert official[path] == types
