"""The tensor codec without TensorFlow: what it writes, and every way a peer's tensor can be wrong."""

from __future__ import annotations

import numpy as np
import pytest

from clothing_preproc import TensorCodecError, array_to_tensor_proto, tensor_proto_to_array, tensor_shape
from clothing_protos import serving_pb2, tensor_pb2


def proto(dtype: int, shape: list[int], **fields: object) -> tensor_pb2.TensorProto:
    message = tensor_pb2.TensorProto(dtype=dtype, **fields)  # type: ignore[arg-type]
    for size in shape:
        message.tensor_shape.dim.add(size=size)
    return message


def test_float32_batches_go_in_tensor_content_little_endian() -> None:
    x = np.arange(6, dtype=">f4").reshape(1, 2, 3)  # big-endian in memory
    message = array_to_tensor_proto(x)
    assert message.dtype == tensor_pb2.DT_FLOAT
    assert [d.size for d in message.tensor_shape.dim] == [1, 2, 3]
    assert message.tensor_content == np.arange(6, dtype="<f4").tobytes()
    assert not message.float_val


def test_a_request_input_written_in_place_is_the_same_message() -> None:
    x = np.random.default_rng(0).random((2, 4, 4, 3), dtype=np.float32)
    copied = serving_pb2.PredictRequest()
    copied.inputs["image"].CopyFrom(array_to_tensor_proto(x))
    in_place = serving_pb2.PredictRequest()
    returned = array_to_tensor_proto(x, into=in_place.inputs["image"])
    assert returned is in_place.inputs["image"]
    assert in_place.SerializeToString() == copied.SerializeToString()
    with pytest.raises(ValueError, match="empty TensorProto"):
        array_to_tensor_proto(x, into=in_place.inputs["image"])


def test_non_contiguous_arrays_are_written_in_c_order() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4).T
    assert np.array_equal(tensor_proto_to_array(array_to_tensor_proto(x)), x)


def test_float64_stays_double_on_purpose() -> None:
    assert array_to_tensor_proto(np.zeros(2)).dtype == tensor_pb2.DT_DOUBLE


def test_model_outputs_decode_from_float_val() -> None:
    logits = [0.5, -1.25, 3.0]
    got = tensor_proto_to_array(proto(tensor_pb2.DT_FLOAT, [1, 3], float_val=logits))
    assert got.dtype == np.float32
    assert got.tolist() == [logits]


def test_tensor_content_of_the_wrong_size_is_refused() -> None:
    message = "tensor_content has 8 bytes; shape \\[1, 3\\] of float32 needs 12"
    with pytest.raises(TensorCodecError, match=message):
        tensor_proto_to_array(proto(tensor_pb2.DT_FLOAT, [1, 3], tensor_content=b"\x00" * 8))


def test_more_values_than_the_shape_holds_are_refused() -> None:
    with pytest.raises(TensorCodecError, match="holds 4 values but its shape \\[3\\] has 3"):
        tensor_proto_to_array(proto(tensor_pb2.DT_FLOAT, [3], float_val=[1, 2, 3, 4]))


def test_fewer_values_repeat_the_last_and_none_mean_zeros() -> None:
    assert tensor_proto_to_array(proto(tensor_pb2.DT_INT32, [4], int_val=[7, 8])).tolist() == [7, 8, 8, 8]
    assert tensor_proto_to_array(proto(tensor_pb2.DT_FLOAT, [2])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "shape",
    [[1 << 40, 1 << 40], [1 << 62, 1 << 62, 4], [100_000, 100_000]],
    ids=["2^80", "wraps-int64", "10^10"],
)
def test_huge_shapes_without_data_allocate_nothing(shape: list[int]) -> None:
    with pytest.raises(TensorCodecError, match="more than"):
        tensor_proto_to_array(proto(tensor_pb2.DT_FLOAT, shape, float_val=[1.0]))


def test_unknown_dimensions_and_rank_are_refused() -> None:
    with pytest.raises(TensorCodecError, match="unknown dimension"):
        tensor_shape(proto(tensor_pb2.DT_FLOAT, [-1, 10]))
    unknown = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT)
    unknown.tensor_shape.unknown_rank = True
    with pytest.raises(TensorCodecError, match="unknown rank"):
        tensor_proto_to_array(unknown)


@pytest.mark.parametrize("dtype", [tensor_pb2.DT_BFLOAT16, tensor_pb2.DT_RESOURCE, 99])
def test_dtypes_without_a_numpy_equivalent_are_refused(dtype: int) -> None:
    with pytest.raises(TensorCodecError, match="unsupported tensor dtype"):
        tensor_proto_to_array(proto(dtype, [1]))


def test_odd_complex_pairs_are_refused() -> None:
    with pytest.raises(TensorCodecError, match="pairs"):
        tensor_proto_to_array(proto(tensor_pb2.DT_COMPLEX64, [1], scomplex_val=[1.0, 2.0, 3.0]))


def test_arrays_numpy_cannot_send_are_refused() -> None:
    with pytest.raises(TensorCodecError, match="no TensorFlow equivalent"):
        array_to_tensor_proto(np.array(["2024-01-01"], dtype="datetime64[D]"))


def test_strings_go_in_string_val() -> None:
    message = array_to_tensor_proto(np.array(["hé", "b"]))
    assert message.dtype == tensor_pb2.DT_STRING
    assert list(message.string_val) == ["hé".encode(), b"b"]
    assert tensor_proto_to_array(message).tolist() == ["hé".encode(), b"b"]


@pytest.mark.parametrize(
    "dtype", ["<f4", "<f8", "<i4", "u1", "<i2", "i1", "<u2", "<i8", "?", "<f2", "<u4", "<u8", "<c8", "<c16"]
)
def test_typed_val_fields_round_trip_every_dtype(dtype: str) -> None:
    # What TF Serving answers by default: the values in the dtype's *_val field, no tensor_content.
    x = (np.arange(12) % 7).astype(dtype).reshape(3, 4)
    message = array_to_tensor_proto(x, as_content=False)
    assert message.tensor_content == b""
    back = tensor_proto_to_array(message)
    assert back.dtype == x.dtype
    assert np.array_equal(back, x)


def test_float_outputs_land_in_float_val() -> None:
    message = array_to_tensor_proto(np.array([[1.5, -2.0]], dtype=np.float32), as_content=False)
    assert list(message.float_val) == [1.5, -2.0]
    assert [d.size for d in message.tensor_shape.dim] == [1, 2]
