"""The tensor codec against TensorFlow's own: `tf.make_tensor_proto` and `tf.make_ndarray`.

The project's TensorProto lives in its own proto package (`clothing.tf`) with TensorFlow's field
numbers, so the two meet as serialised bytes, exactly as they do on the wire.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_protos import tensor_pb2

# TensorFlow writes these as tensor_content (for more than one element); everything else, and
# single elements, go to the typed *_val fields.
CONTENT_DTYPES = ["<f2", "<f4", "<f8", "<i4", "u1", "<i2", "i1", "<i8", "<u4", "<u8"]
OTHER_DTYPES = ["?", "<u2", "<c8", "<c16"]
# The typed field TF Serving fills in a response (Tensor::AsProtoField) for each dtype.
VAL_FIELD = {
    "float16": "half_val",
    "float32": "float_val",
    "float64": "double_val",
    "int32": "int_val",
    "uint8": "int_val",
    "int16": "int_val",
    "int8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
    "complex64": "scomplex_val",
    "complex128": "dcomplex_val",
}

SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


def arrays(dtypes: list[str]) -> st.SearchStrategy[npt.NDArray[Any]]:
    return st.sampled_from(dtypes).flatmap(lambda d: hnp.arrays(np.dtype(d), SHAPES))


def to_tf(proto: tensor_pb2.TensorProto) -> tf_tensor_pb2.TensorProto:
    return tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def from_tf(proto: tf_tensor_pb2.TensorProto) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def assert_same(actual: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)  # NaN equals NaN here, as it should


def as_val_fields(x: npt.NDArray[Any]) -> tf_tensor_pb2.TensorProto:
    """`x` as TF Serving answers by default: dtype and shape from TensorFlow, values in *_val."""
    proto = tf.make_tensor_proto(x)
    proto.ClearField("tensor_content")
    field = VAL_FIELD[x.dtype.name]
    proto.ClearField(field)
    flat = x.reshape(-1)
    if x.dtype == np.float16:
        values: Any = flat.view(np.uint16).astype(np.int32)
    elif x.dtype.kind == "c":
        values = flat.view(np.float32 if x.dtype == np.complex64 else np.float64)
    else:
        values = flat
    getattr(proto, field).extend(values.tolist())
    return proto


SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(arrays(CONTENT_DTYPES))
def test_requests_serialise_exactly_as_make_tensor_proto(x: npt.NDArray[Any]) -> None:
    ours = array_to_tensor_proto(x)
    if x.size > 1:
        # What TF Serving receives from this library is byte for byte what a TensorFlow client sends.
        assert ours.SerializeToString() == tf.make_tensor_proto(x).SerializeToString()
    assert_same(tf.make_ndarray(to_tf(ours)), x)


@SLOW
@given(arrays(CONTENT_DTYPES + OTHER_DTYPES))
def test_codec_round_trips_agree_with_tensorflow(x: npt.NDArray[Any]) -> None:
    ours = array_to_tensor_proto(x)
    theirs = tf.make_tensor_proto(x)
    assert ours.dtype == theirs.dtype
    assert_same(tensor_proto_to_array(ours), x)
    assert_same(tf.make_ndarray(to_tf(ours)), x)
    assert_same(tensor_proto_to_array(from_tf(theirs)), tf.make_ndarray(theirs))


@SLOW
@given(arrays(CONTENT_DTYPES + OTHER_DTYPES))
def test_val_field_responses_decode_like_make_ndarray(x: npt.NDArray[Any]) -> None:
    response = as_val_fields(x)
    decoded = tensor_proto_to_array(from_tf(response))
    assert_same(decoded, tf.make_ndarray(response))
    assert_same(decoded, x)


@SLOW
@given(
    st.sampled_from(["float32", "float64", "int32", "int64", "bool", "uint8"]),
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
    st.data(),
)
def test_short_val_fields_repeat_the_last_value_like_tensorflow(
    dtype: str, shape: tuple[int, ...], data: st.DataObject
) -> None:
    # TensorFlow's compact form: fewer values than the shape holds, the last one repeated.
    count = int(np.prod(shape))
    values = data.draw(hnp.arrays(np.dtype(dtype), data.draw(st.integers(1, count))))
    compact = tf.make_tensor_proto(values, dtype=tf.as_dtype(dtype), shape=shape)
    assert_same(tensor_proto_to_array(from_tf(compact)), tf.make_ndarray(compact))


@given(st.lists(st.binary(max_size=20), max_size=6))
def test_string_tensors_agree_with_tensorflow(items: list[bytes]) -> None:
    x = np.array(items, dtype=object)
    ours = array_to_tensor_proto(x)
    assert ours.SerializeToString() == tf.make_tensor_proto(x).SerializeToString()
    assert list(tf.make_ndarray(to_tf(ours)).reshape(-1)) == items
    assert list(tensor_proto_to_array(ours).reshape(-1)) == items


def test_course_sized_request_is_byte_identical() -> None:
    batch = np.random.default_rng(3).uniform(-1, 1, size=(2, 299, 299, 3)).astype(np.float32)
    ours = array_to_tensor_proto(batch).SerializeToString()
    assert ours == tf.make_tensor_proto(batch).SerializeToString()
    assert len(ours) == 2 * 299 * 299 * 3 * 4 + 27  # the pixels, plus dtype, shape and length tags
