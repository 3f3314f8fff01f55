"""The base of the TF Serving stand-ins that tests start: what the gateway never calls is refused.

The gateway calls Predict and GetModelMetadata (and GetModelStatus on the model service); a
stand-in implements those. Classify, Regress and MultiInference answer UNIMPLEMENTED, as gRPC's
generated servicer would, but written out so that a stand-in is a complete servicer to mypy.
"""

from __future__ import annotations

import grpc

from clothing_protos import prediction_service_pb2_grpc, serving_pb2

_NOT_HERE = "this stand-in answers only the calls the gateway makes"


def _refuse(context: grpc.ServicerContext) -> None:
    context.set_code(grpc.StatusCode.UNIMPLEMENTED)
    context.set_details(_NOT_HERE)


class PredictOnlyServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Classify(
        self, request: serving_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> serving_pb2.ClassificationResponse:
        _refuse(context)
        return serving_pb2.ClassificationResponse()

    def Regress(
        self, request: serving_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> serving_pb2.RegressionResponse:
        _refuse(context)
        return serving_pb2.RegressionResponse()

    def MultiInference(
        self, request: serving_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> serving_pb2.MultiInferenceResponse:
        _refuse(context)
        return serving_pb2.MultiInferenceResponse()
