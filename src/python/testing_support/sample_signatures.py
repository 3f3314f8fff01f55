"""Test-only: SignatureDefs shaped like the course model's, as TF Serving's metadata reports them."""

from __future__ import annotations

from clothing_preproc.signature import (
    COURSE_INPUT_NAME,
    COURSE_OUTPUT_NAME,
    PREDICT_METHOD_NAME,
    pack_signature_def_map,
)
from clothing_protos import meta_graph_pb2, serving_pb2, tensor_pb2


def image_signature_def(
    input_name: str = COURSE_INPUT_NAME,
    output_name: str = COURSE_OUTPUT_NAME,
    *,
    dtype: tensor_pb2.DataType.ValueType = tensor_pb2.DT_FLOAT,
) -> meta_graph_pb2.SignatureDef:
    """A predict signature: one (-1, 299, 299, 3) image input of `dtype`, one (-1, 10) float output."""
    sig = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD_NAME)
    image = sig.inputs[input_name]
    image.name = f"serving_default_{input_name}:0"
    image.dtype = dtype
    for size in (-1, 299, 299, 3):
        image.tensor_shape.dim.add(size=size)
    logits = sig.outputs[output_name]
    logits.name = "StatefulPartitionedCall:0"
    logits.dtype = tensor_pb2.DT_FLOAT
    for size in (-1, 10):
        logits.tensor_shape.dim.add(size=size)
    return sig


def image_model_metadata(model_name: str, version: int = 1) -> serving_pb2.GetModelMetadataResponse:
    """What a stand-in TF Serving answers to GetModelMetadata: the course's serving_default."""
    response = serving_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = version
    signatures = serving_pb2.SignatureDefMap()
    signatures.signature_def["serving_default"].CopyFrom(image_signature_def())
    response.metadata["signature_def"].CopyFrom(pack_signature_def_map(signatures))
    return response


def available_model_status(version: int = 1) -> serving_pb2.GetModelStatusResponse:
    """What a stand-in TF Serving answers to GetModelStatus: one version, AVAILABLE."""
    response = serving_pb2.GetModelStatusResponse()
    response.model_version_status.add(version=version, state=serving_pb2.ModelVersionStatus.AVAILABLE)
    return response
