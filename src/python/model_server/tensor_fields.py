"""Response tensors as TF Serving writes them: typed `*_val` fields by default, `tensor_content` on request.

clothing_preproc's codec writes `tensor_content` (what clients should send); TF Serving answers
with `Tensor::AsProtoField` unless `--enable_serialization_as_tensor_content` is given, and clients
written against it may read only `float_val`, so both forms are produced here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from clothing_preproc import array_to_tensor_proto, tf_dtype
from clothing_protos import tensor_pb2

_FIELD: dict[int, str] = {
    tensor_pb2.DT_FLOAT: "float_val",
    tensor_pb2.DT_DOUBLE: "double_val",
    tensor_pb2.DT_INT32: "int_val",
    tensor_pb2.DT_UINT8: "int_val",
    tensor_pb2.DT_INT16: "int_val",
    tensor_pb2.DT_INT8: "int_val",
    tensor_pb2.DT_UINT16: "int_val",
    tensor_pb2.DT_INT64: "int64_val",
    tensor_pb2.DT_BOOL: "bool_val",
    tensor_pb2.DT_UINT32: "uint32_val",
    tensor_pb2.DT_UINT64: "uint64_val",
}


def encode_output(array: npt.NDArray[Any], as_content: bool) -> tensor_pb2.TensorProto:
    if as_content:
        return array_to_tensor_proto(array)
    return array_to_proto_field(array)


def array_to_proto_field(array: npt.NDArray[Any]) -> tensor_pb2.TensorProto:
    """The array in its dtype's repeated field (TensorFlow's `AsProtoField`)."""
    arr = np.asarray(array)
    dtype = tf_dtype(arr.dtype)
    proto = tensor_pb2.TensorProto(dtype=dtype)  # type: ignore[arg-type]
    for size in arr.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = arr.reshape(-1)
    if dtype == tensor_pb2.DT_STRING:
        proto.string_val.extend(x if isinstance(x, bytes) else str(x).encode("utf-8") for x in flat)
    elif dtype == tensor_pb2.DT_HALF:
        proto.half_val.extend(flat.astype("<f2").view(np.uint16).tolist())
    elif dtype in (tensor_pb2.DT_COMPLEX64, tensor_pb2.DT_COMPLEX128):
        field = "scomplex_val" if dtype == tensor_pb2.DT_COMPLEX64 else "dcomplex_val"
        getattr(proto, field).extend(np.stack([flat.real, flat.imag], axis=-1).reshape(-1).tolist())
    else:
        getattr(proto, _FIELD[dtype]).extend(flat.tolist())
    return proto
