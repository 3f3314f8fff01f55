"""numpy arrays ↔ TensorProto, as TensorFlow reads and writes them, without importing TensorFlow.

Requests are written with `tensor_content` (one little-endian buffer: smallest on the wire and
cheapest to build); responses are read from `tensor_content` or from the typed `*_val` fields,
which is what TF Serving sends by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clothing_preproc.errors import TensorCodecError
from clothing_protos import tensor_pb2

# TensorFlow DataType enum -> numpy dtype (little-endian, as TensorFlow lays out tensor_content).
_NUMPY_BY_DTYPE: dict[int, np.dtype[Any]] = {
    tensor_pb2.DT_FLOAT: np.dtype("<f4"),
    tensor_pb2.DT_DOUBLE: np.dtype("<f8"),
    tensor_pb2.DT_INT32: np.dtype("<i4"),
    tensor_pb2.DT_UINT8: np.dtype("u1"),
    tensor_pb2.DT_INT16: np.dtype("<i2"),
    tensor_pb2.DT_INT8: np.dtype("i1"),
    tensor_pb2.DT_COMPLEX64: np.dtype("<c8"),
    tensor_pb2.DT_INT64: np.dtype("<i8"),
    tensor_pb2.DT_BOOL: np.dtype("?"),
    tensor_pb2.DT_UINT16: np.dtype("<u2"),
    tensor_pb2.DT_COMPLEX128: np.dtype("<c16"),
    tensor_pb2.DT_HALF: np.dtype("<f2"),
    tensor_pb2.DT_UINT32: np.dtype("<u4"),
    tensor_pb2.DT_UINT64: np.dtype("<u8"),
}
_DTYPE_BY_KIND: dict[tuple[str, int], int] = {
    (np_dtype.kind, np_dtype.itemsize): dt for dt, np_dtype in _NUMPY_BY_DTYPE.items()
}

# Which repeated field carries each dtype when tensor_content is empty.
_VAL_FIELD: dict[int, str] = {
    tensor_pb2.DT_FLOAT: "float_val",
    tensor_pb2.DT_DOUBLE: "double_val",
    tensor_pb2.DT_INT32: "int_val",
    tensor_pb2.DT_UINT8: "int_val",
    tensor_pb2.DT_INT16: "int_val",
    tensor_pb2.DT_INT8: "int_val",
    tensor_pb2.DT_UINT16: "int_val",
    tensor_pb2.DT_INT64: "int64_val",
    tensor_pb2.DT_BOOL: "bool_val",
    tensor_pb2.DT_HALF: "half_val",
    tensor_pb2.DT_UINT32: "uint32_val",
    tensor_pb2.DT_UINT64: "uint64_val",
    tensor_pb2.DT_COMPLEX64: "scomplex_val",
    tensor_pb2.DT_COMPLEX128: "dcomplex_val",
}

# Bounds on what a peer's tensor may decode to, all checked from its header fields (dtype, shape,
# value counts, byte lengths) before anything is allocated. A 67-byte message can declare a shape of
# any size; these keep what it costs in proportion to what it carries.
#
# Elements: 2^26 is 64 float32 images of 512×512×3.
DEFAULT_MAX_ELEMENTS = 1 << 26
# Decoded bytes (strings: a pointer per element plus their bytes): what one tensor may occupy.
DEFAULT_MAX_BYTES = 1 << 30
# TensorFlow fills a tensor sent with fewer values than its shape holds (none: zeros; some: the last
# value repeated). Those elements cost memory the sender never sent, so the filled size of such a
# tensor is bounded separately: 4 MiB holds one 299×299 float32 image and change.
DEFAULT_MAX_FILL_BYTES = 1 << 22
# TensorFlow's TensorShape::MaxDimensions().
MAX_RANK = 254
# Protobuf cannot serialise a message of 2 GB or more (TensorFlow refuses such tensors too).
_MAX_MESSAGE_BYTES = 1 << 31
# Bytes an object array spends per element (a pointer), for string tensors.
_POINTER_BYTES = np.dtype(object).itemsize


def dtype_name(dtype: int) -> str:
    """`DT_FLOAT` -> "float32" style names used in errors and the model description."""
    if dtype == tensor_pb2.DT_STRING:
        return "string"
    np_dtype = _NUMPY_BY_DTYPE.get(dtype)
    if np_dtype is not None:
        return np_dtype.name
    if dtype in tensor_pb2.DataType.values():
        return tensor_pb2.DataType.Name(dtype)  # type: ignore[arg-type]
    return f"dtype {dtype}"


def numpy_dtype(dtype: int) -> np.dtype[Any]:
    """The numpy dtype of a TensorFlow DataType value (string tensors are `object`)."""
    if dtype == tensor_pb2.DT_STRING:
        return np.dtype(object)
    try:
        return _NUMPY_BY_DTYPE[dtype]
    except KeyError:
        raise TensorCodecError(f"unsupported tensor dtype {dtype_name(dtype)}") from None


def tf_dtype(np_dtype: npt.DTypeLike) -> int:
    """The TensorFlow DataType value for a numpy dtype."""
    d = np.dtype(np_dtype)
    if d.kind in "OSU":
        return tensor_pb2.DT_STRING
    try:
        return _DTYPE_BY_KIND[(d.kind, d.itemsize)]
    except KeyError:
        raise TensorCodecError(f"numpy dtype {d} has no TensorFlow equivalent") from None


def array_to_tensor_proto(
    array: npt.ArrayLike, *, as_content: bool = True, into: tensor_pb2.TensorProto | None = None
) -> tensor_pb2.TensorProto:
    """Encode an array as TensorFlow would send it: dtype, shape and the values.

    `into` is an empty message to write into, such as a request's `inputs[name]` entry: a 1 MB
    tensor is then written once rather than built apart and copied in with `CopyFrom`.

    The values go to `tensor_content` (what clients send: one buffer, smallest and cheapest), or
    with `as_content=False` to the dtype's typed `*_val` field, as TF Serving answers by default
    (TensorFlow's `AsProtoField`), for clients that read only `float_val`.
    A float64 array stays DT_DOUBLE (models expecting float32 reject it): cast first, on purpose.
    Byte strings always go to `string_val`, as TensorFlow requires for DT_STRING.
    """
    arr = np.asarray(array)
    if arr.nbytes >= _MAX_MESSAGE_BYTES:
        raise TensorCodecError(f"a tensor of {arr.nbytes} bytes cannot be sent (protobuf's limit is 2 GB)")
    dtype = tf_dtype(arr.dtype)
    proto = tensor_pb2.TensorProto() if into is None else into
    if proto.ByteSize():
        raise ValueError("array_to_tensor_proto writes into an empty TensorProto only")
    proto.dtype = dtype  # type: ignore[assignment]
    for size in arr.shape:
        proto.tensor_shape.dim.add(size=size)
    if as_content and dtype != tensor_pb2.DT_STRING:
        # tobytes() writes C order whatever the array's layout: one copy, none for the byte order
        # unless the array is big-endian.
        proto.tensor_content = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        return proto
    # The typed fields take the values one by one: a flat view (a copy only if `arr` is strided).
    flat = arr.reshape(-1)
    if dtype == tensor_pb2.DT_STRING:
        proto.string_val.extend(x if isinstance(x, bytes) else str(x).encode("utf-8") for x in flat)
    elif dtype == tensor_pb2.DT_HALF:
        # half_val carries the 16-bit patterns.
        proto.half_val.extend(flat.astype("<f2").view(np.uint16).tolist())
    elif dtype in (tensor_pb2.DT_COMPLEX64, tensor_pb2.DT_COMPLEX128):
        pairs = np.stack([flat.real, flat.imag], axis=-1).reshape(-1)
        getattr(proto, _VAL_FIELD[dtype]).extend(pairs.tolist())
    else:
        getattr(proto, _VAL_FIELD[dtype]).extend(flat.tolist())
    return proto


def tensor_shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The concrete shape of a tensor message (every dimension known, at most `MAX_RANK` of them)."""
    if proto.tensor_shape.unknown_rank:
        raise TensorCodecError("tensor has unknown rank")
    rank = len(proto.tensor_shape.dim)
    if rank > MAX_RANK:
        raise TensorCodecError(f"tensor has {rank} dimensions; at most {MAX_RANK} are allowed")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise TensorCodecError(f"tensor shape {list(shape)} has an unknown dimension")
    return shape


@dataclass(frozen=True)
class TensorHeader:
    """What a tensor message will decode to, read from its header fields alone."""

    dtype: int
    shape: tuple[int, ...]
    count: int  # elements the shape holds
    values: int  # values the message carries (count, or fewer to be filled as TensorFlow does)
    nbytes: int  # bytes the decoded array will occupy


def check_tensor_header(
    proto: tensor_pb2.TensorProto,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_fill_bytes: int = DEFAULT_MAX_FILL_BYTES,
) -> TensorHeader:
    """Check that a tensor message's dtype, shape and sizes fit together and within the bounds.

    Reads only lengths (of the shape, `tensor_content` and the typed value field), so a message that
    declares more than it carries is refused before any array exists. Raises `TensorCodecError`.
    """
    shape = tensor_shape(proto)
    dtype = int(proto.dtype)
    np_dtype = numpy_dtype(dtype)  # an unsupported dtype is refused before its size matters
    # Python integers: a hostile shape like [2**40, 2**40] must not wrap around in int64.
    count = math.prod(shape)
    if count > max_elements:
        raise TensorCodecError(f"tensor of shape {list(shape)} has more than {max_elements} elements")
    name = dtype_name(dtype)
    if dtype == tensor_pb2.DT_STRING:
        values = len(proto.string_val)
        # The strings' own bytes are in the message already; the array adds a pointer per element.
        nbytes = count * _POINTER_BYTES + sum(len(s) for s in proto.string_val)
    elif proto.tensor_content:
        values = count
        nbytes = count * np_dtype.itemsize
        if len(proto.tensor_content) != nbytes:
            raise TensorCodecError(
                f"tensor_content has {len(proto.tensor_content)} bytes; shape {list(shape)} of "
                f"{np_dtype.name} needs {nbytes}"
            )
    else:
        field = _VAL_FIELD[dtype]
        values = len(getattr(proto, field))
        if dtype in (tensor_pb2.DT_COMPLEX64, tensor_pb2.DT_COMPLEX128):
            if values % 2:
                raise TensorCodecError(f"{field} must hold (real, imaginary) pairs")
            values //= 2
        nbytes = count * np_dtype.itemsize
    if values > count:
        raise TensorCodecError(f"tensor holds {values} values but its shape {list(shape)} has {count}")
    if nbytes > max_bytes:
        raise TensorCodecError(
            f"tensor of shape {list(shape)} of {name} would take {nbytes} bytes; the limit is {max_bytes}"
        )
    if values < count and nbytes > max_fill_bytes:
        raise TensorCodecError(
            f"tensor of shape {list(shape)} of {name} carries {values} of its {count} values; filling "
            f"in the rest would take {nbytes} bytes, and the limit for a tensor sent incomplete is "
            f"{max_fill_bytes} (send every value)"
        )
    return TensorHeader(dtype=dtype, shape=shape, count=count, values=values, nbytes=nbytes)


def tensor_proto_to_array(
    proto: tensor_pb2.TensorProto,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_fill_bytes: int = DEFAULT_MAX_FILL_BYTES,
) -> npt.NDArray[Any]:
    """Decode a tensor message from `tensor_content` or the typed `*_val` field.

    Follows `tf.make_ndarray`: no values means zeros, fewer values than the shape holds repeat the
    last one. Everything `check_tensor_header` refuses (more values than the shape holds, a content
    size that does not match, too many elements or bytes, too much to fill in) is a
    `TensorCodecError`, raised before anything is allocated.
    """
    header = check_tensor_header(
        proto, max_elements=max_elements, max_bytes=max_bytes, max_fill_bytes=max_fill_bytes
    )
    shape, count = header.shape, header.count
    np_dtype = numpy_dtype(header.dtype)

    if header.dtype == tensor_pb2.DT_STRING:
        strings = list(proto.string_val)
        return _fill(np.array(strings, dtype=object), count, shape, np_dtype)

    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()

    raw = getattr(proto, _VAL_FIELD[header.dtype])
    if header.dtype == tensor_pb2.DT_HALF:
        values = np.array(raw, dtype=np.uint16).view(np.float16)
    elif header.dtype in (tensor_pb2.DT_COMPLEX64, tensor_pb2.DT_COMPLEX128):
        pairs = np.array(raw, dtype=np.float32 if header.dtype == tensor_pb2.DT_COMPLEX64 else np.float64)
        values = pairs.view(np_dtype)
    else:
        values = np.array(raw, dtype=np_dtype)
    return _fill(values, count, shape, np_dtype)


def _fill(
    values: npt.NDArray[Any], count: int, shape: tuple[int, ...], np_dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    if values.size == 0:
        return np.zeros(shape, dtype=np_dtype) if np_dtype != object else np.full(shape, b"", dtype=object)
    if values.size < count:
        values = np.pad(values, (0, count - values.size), mode="edge")
    return values.reshape(shape)
