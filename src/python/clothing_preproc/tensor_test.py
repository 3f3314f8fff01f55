"""The tensor codec without TensorFlow: what it writes, and every way a peer's tensor can be wrong."""

from __future__ import annotations

import numpy as np
import pytest

from clothing_preproc import (
    TensorCodecError,
    array_to_tensor_proto,
    check_tensor_header,
    tensor_proto_to_array,
    tensor_shape,
)
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


# Hostile headers: a few bytes declaring a huge tensor. Each must be refused from the header fields,
# before numpy allocates anything (the model server's process test measures the memory).
HOSTILE_HEADERS: dict[str, tuple[tensor_pb2.TensorProto, str]] = {
    "complex128 [2^26], one value (1 GiB if filled)": (
        proto(tensor_pb2.DT_COMPLEX128, [1 << 26], dcomplex_val=[1.0, 2.0]),
        "carries 1 of its 67108864 values; filling in the rest would take 1073741824 bytes",
    ),
    "string [2^26], one value (512 MiB of pointers)": (
        proto(tensor_pb2.DT_STRING, [1 << 26], string_val=[b"x"]),
        "carries 1 of its 67108864 values",
    ),
    "string [2^26], no value": (
        proto(tensor_pb2.DT_STRING, [1 << 26]),
        "carries 0 of its 67108864 values",
    ),
    "float [2^26], no value (zeros)": (
        proto(tensor_pb2.DT_FLOAT, [1 << 26]),
        "carries 0 of its 67108864 values",
    ),
    "float [16, 299, 299, 3], one value": (
        proto(tensor_pb2.DT_FLOAT, [16, 299, 299, 3], float_val=[0.5]),
        "the limit for a tensor sent incomplete is 4194304",
    ),
    "complex128 [2^26] in tensor_content of 16 bytes": (
        proto(tensor_pb2.DT_COMPLEX128, [1 << 26], tensor_content=b"\x00" * 16),
        "tensor_content has 16 bytes; shape \\[67108864\\] of complex128 needs 1073741824",
    ),
    "2^27 elements": (proto(tensor_pb2.DT_UINT8, [1 << 27], int_val=[1]), "more than 67108864 elements"),
    "300 dimensions of size 1": (proto(tensor_pb2.DT_FLOAT, [1] * 300), "300 dimensions; at most 254"),
    "bfloat16 (no numpy dtype)": (proto(tensor_pb2.DT_BFLOAT16, [1 << 26]), "unsupported tensor dtype"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_hostile_headers_are_refused_before_allocating(case: str) -> None:
    message, match = HOSTILE_HEADERS[case]
    with pytest.raises(TensorCodecError, match=match):
        check_tensor_header(message)
    with pytest.raises(TensorCodecError, match=match):
        tensor_proto_to_array(message)


def test_the_decoded_size_bound_holds_for_complete_tensors() -> None:
    message = proto(tensor_pb2.DT_FLOAT, [4, 4], tensor_content=b"\x00" * 64)
    assert check_tensor_header(message, max_bytes=64).nbytes == 64
    with pytest.raises(TensorCodecError, match="would take 64 bytes; the limit is 63"):
        tensor_proto_to_array(message, max_bytes=63)
    strings = proto(tensor_pb2.DT_STRING, [2], string_val=[b"abc", b"de"])
    assert check_tensor_header(strings).nbytes == 2 * 8 + 5


def test_filling_within_the_bound_is_tensorflows() -> None:
    header = check_tensor_header(proto(tensor_pb2.DT_INT32, [4], int_val=[7, 8]))
    assert (header.count, header.values, header.nbytes) == (4, 2, 16)
    # The fill bound applies to incomplete tensors only: a complete one may be larger.
    one = proto(tensor_pb2.DT_UINT8, [8], int_val=[1])
    assert tensor_proto_to_array(one, max_fill_bytes=8).tolist() == [1] * 8
    with pytest.raises(TensorCodecError, match="send every value"):
        tensor_proto_to_array(one, max_fill_bytes=7)
    every = proto(tensor_pb2.DT_UINT8, [8], int_val=list(range(8)))
    assert tensor_proto_to_array(every, max_fill_bytes=1).size == 8


@pytest.mark.parametrize("shape", [[1 << 26], [4096, 4096, 4]], ids=["2^26", "4096x4096x4"])
def test_decoding_hostile_headers_keeps_memory_flat(shape: list[int]) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for dtype, field in ((tensor_pb2.DT_COMPLEX128, "dcomplex_val"), (tensor_pb2.DT_STRING, "string_val")):
        value: list[object] = [1.0, 2.0] if field == "dcomplex_val" else [b"x"]
        for _ in range(4):
            with pytest.raises(TensorCodecError):
                tensor_proto_to_array(proto(dtype, shape, **{field: value}))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024
