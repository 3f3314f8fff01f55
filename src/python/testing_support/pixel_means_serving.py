"""A stand-in TF Serving on loopback whose logits follow the pixels: each image's channel means
times fixed weights, so every image gets its own numbers. It answers the three calls the gateway
makes (Predict, GetModelMetadata, GetModelStatus) for a model with the course's signature."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from testing_support.ports import LOOPBACK
from testing_support.predict_only import PredictOnlyServicer
from testing_support.sample_signatures import available_model_status, image_model_metadata


class PixelMeansServing(PredictOnlyServicer, prediction_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's three calls the gateway makes; `version` answers."""

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


@contextlib.contextmanager
def pixel_means_serving(version: int = 1) -> Iterator[str]:
    """The stand-in serving `version`, on a free loopback port; yields its host:port."""
    # A full batch of float32 images is 17 MB; gRPC's default limit is 4 MB (TF Serving has none).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", -1)]
    )
    stand_in = PixelMeansServing(version)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(stand_in, server)
    prediction_service_pb2_grpc.add_ModelServiceServicer_to_server(stand_in, server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        server.stop(0)
