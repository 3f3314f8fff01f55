"""The baseline: the course's gateway as the course built it (Flask, run by gunicorn sync workers).

keras-image-helper downloads and preprocesses the image; the TensorProto is built by hand
(`tensor_content`, as the course's TensorFlow-free `proto.py` does); one gRPC channel per worker,
made at import. Only the stub import differs: the project's TF-free stubs speak the same wire
protocol as tensorflow-serving-api's. No validation and no limits, like the original.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
import numpy as np
from flask import Flask, jsonify, request
from keras_image_helper import create_preprocessor

from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2, tensor_pb2

host = os.getenv("TF_SERVING_HOST", "localhost:8500")
channel = grpc.insecure_channel(host)
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
preprocessor = create_preprocessor("xception", target_size=(299, 299))

classes = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]


def np_to_protobuf(data: Any) -> tensor_pb2.TensorProto:
    if data.dtype != "float32":
        data = data.astype("float32")
    proto = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT)
    for size in data.shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_content = data.tobytes()
    return proto


def prepare_request(X: Any) -> serving_pb2.PredictRequest:  # - the course's name
    pb_request = serving_pb2.PredictRequest()
    pb_request.model_spec.name = COURSE_MODEL_NAME
    pb_request.model_spec.signature_name = "serving_default"
    pb_request.inputs[COURSE_INPUT_NAME].CopyFrom(np_to_protobuf(X))
    return pb_request


def predict(url: str) -> dict[str, float]:
    X = preprocessor.from_url(url)  # - the course's name
    pb_response = stub.Predict(prepare_request(X), timeout=20.0)
    preds = pb_response.outputs[COURSE_OUTPUT_NAME].float_val
    return dict(zip(classes, (float(p) for p in np.asarray(preds)), strict=True))


app = Flask("gateway")


@app.route("/predict", methods=["POST"])
def predict_endpoint() -> Any:
    data = request.get_json()
    return jsonify(predict(data["url"]))
