"""A TF Serving stand-in on loopback (gRPC): the three calls the gateway makes, one model version.

Its logits follow the pixels (each image's channel means times fixed weights), so images of
different colours get different top classes; every answer names `version` as the one that served
it. For tests that need a gateway's answers without TensorFlow; the real model server's answers
are tested against it elsewhere (gateway/api_test.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
import numpy as np

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from testing_support.predict_only import PredictOnlyServicer
from testing_support.sample_signatures import available_model_status, image_model_metadata


class StandInServing(PredictOnlyServicer, prediction_service_pb2_grpc.ModelServiceServicer):
    weights = np.linspace(-1.0, 1.0, 30, dtype=np.float32).reshape(3, 10)

    def __init__(self, version: int = 1) -> None:
        self.version = version

    def Predict(
        self, request: serving_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> serving_pb2.PredictResponse:
        images = tensor_proto_to_array(request.inputs[COURSE_INPUT_NAME]).astype(np.float32)
        logits = images.mean(axis=(1, 2)) @ self.weights
        response = serving_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.version
        response.outputs[COURSE_OUTPUT_NAME].CopyFrom(array_to_tensor_proto(logits.astype(np.float32)))
        return response

    def GetModelMetadata(
        self, request: serving_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelMetadataResponse:
        return image_model_metadata(request.model_spec.name, self.version)

    def GetModelStatus(
        self, request: serving_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelStatusResponse:
        return available_model_status(self.version)


@contextmanager
def stand_in_serving(version: int = 1) -> Iterator[str]:
    """The stand-in serving `version`, on 127.0.0.1; yields its host:port, stops it after."""
    # A full batch of float32 images is 17 MB; gRPC's default limit is 4 MB (TF Serving has none).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", -1)]
    )
    servicer = StandInServing(version)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    prediction_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)
