"""A model's signatures, and the checks a Predict request passes before the model runs.

The checks and their messages follow TF Serving's `predict_util.cc` in its order (method name,
number of inputs, input names, output filter), then the dtype TensorFlow's session would refuse
(in its own wording), checked from a tensor's header before it is decoded. Shapes are left to the
graph, as in TF Serving (half_plus_two's `x`, signed [-1,1], takes [3]), with one exception: an
input that is a placeholder must fit the shape the placeholder declares, because a oneDNN kernel
given a tensor of another rank aborts the process instead of failing the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clothing_preproc import numpy_dtype, tf_dtype
from clothing_preproc.errors import TensorCodecError
from clothing_protos import meta_graph_pb2, tensor_pb2
from model_server.errors import FailedPrecondition, Internal, InvalidArgument

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"

# TensorFlow's DataTypeString names, which its error messages use ("float", not "float32").
_TF_TYPE_NAMES: dict[int, str] = {
    tensor_pb2.DT_FLOAT: "float",
    tensor_pb2.DT_DOUBLE: "double",
    tensor_pb2.DT_INT32: "int32",
    tensor_pb2.DT_UINT8: "uint8",
    tensor_pb2.DT_INT16: "int16",
    tensor_pb2.DT_INT8: "int8",
    tensor_pb2.DT_STRING: "string",
    tensor_pb2.DT_COMPLEX64: "complex64",
    tensor_pb2.DT_INT64: "int64",
    tensor_pb2.DT_BOOL: "bool",
    tensor_pb2.DT_BFLOAT16: "bfloat16",
    tensor_pb2.DT_UINT16: "uint16",
    tensor_pb2.DT_COMPLEX128: "complex128",
    tensor_pb2.DT_HALF: "half",
    tensor_pb2.DT_UINT32: "uint32",
    tensor_pb2.DT_UINT64: "uint64",
}


def tf_type_name(dtype: int) -> str:
    return _TF_TYPE_NAMES.get(dtype, f"type{dtype}")


def array_dtype(array: npt.NDArray[Any]) -> int:
    """The TensorFlow DataType an array stands for (object arrays hold strings)."""
    try:
        return tf_dtype(array.dtype)
    except TensorCodecError:
        return tensor_pb2.DT_INVALID


@dataclass(frozen=True)
class TensorBinding:
    """A signature alias and the graph tensor behind it."""

    alias: str
    tensor_name: str
    dtype: int
    shape: tuple[int, ...] | None  # None: unknown rank; -1: any size
    # The shape a placeholder behind this alias declares (None: not a placeholder, or of unknown
    # rank): the only shape a request is held to before the graph runs.
    fed_shape: tuple[int, ...] | None = None

    @classmethod
    def from_info(
        cls, alias: str, info: meta_graph_pb2.TensorInfo, fed_shape: tuple[int, ...] | None = None
    ) -> TensorBinding:
        shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
        return cls(
            alias=alias, tensor_name=info.name, dtype=int(info.dtype), shape=shape, fed_shape=fed_shape
        )

    def shape_text(self) -> str:
        return _shape_text(self.shape)


def _shape_text(shape: Sequence[int] | None) -> str:
    return "[?]" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorBinding]
    outputs: Mapping[str, TensorBinding]

    @classmethod
    def from_def(
        cls,
        name: str,
        sig: meta_graph_pb2.SignatureDef,
        placeholder_shapes: Mapping[str, tuple[int, ...] | None] | None = None,
    ) -> Signature:
        fed = placeholder_shapes or {}
        return cls(
            name=name,
            method_name=sig.method_name,
            inputs={a: TensorBinding.from_info(a, i, fed.get(i.name)) for a, i in sorted(sig.inputs.items())},
            outputs={a: TensorBinding.from_info(a, i) for a, i in sorted(sig.outputs.items())},
        )

    @property
    def batchable(self) -> bool:
        """Every input and output has a leading batch dimension of any size."""
        return all(
            b.shape is not None and len(b.shape) >= 1 and b.shape[0] == -1
            for b in (*self.inputs.values(), *self.outputs.values())
        )

    def check_names(self, input_aliases: Iterable[str], output_filter: Sequence[str]) -> tuple[str, ...]:
        """TF Serving's request checks; returns the output aliases to fetch, in response order."""
        if self.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise Internal(
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {self.method_name}"
            )
        sent = sorted(input_aliases)
        expected = sorted(self.inputs)
        if len(sent) != len(expected):
            extra = sorted(set(sent) - set(expected))
            missing = sorted(set(expected) - set(sent))
            raise InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        for alias in sent:
            if alias not in self.inputs:
                raise InvalidArgument(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{','.join(expected)}}}."
                )
        fetch: list[str] = []
        for alias in output_filter:
            if alias not in self.outputs:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{','.join(sorted(self.outputs))}}}."
                )
            if alias in fetch:
                raise InvalidArgument(f"duplicate output tensor alias: {alias}")
            fetch.append(alias)
        return tuple(fetch) if fetch else tuple(self.outputs)

    def check_tensors(self, inputs: Mapping[str, npt.NDArray[Any]]) -> None:
        """dtype of each input array, and its shape where a placeholder declares one."""
        self.check_inputs({alias: (array_dtype(array), array.shape) for alias, array in inputs.items()})

    def check_inputs(self, described: Mapping[str, tuple[int, tuple[int, ...]]]) -> None:
        """Each input's (dtype, shape) against the signature (names already checked).

        Takes what a tensor's header says, so the gRPC front checks a request before decoding it:
        a few bytes declaring a huge tensor of the wrong kind never become an array.
        """
        for index, alias in enumerate(sorted(described)):
            binding = self.inputs[alias]
            sent, shape = described[alias]
            if sent != binding.dtype:
                # TensorFlow's wording for a feed of the wrong type (arg = position in the feed).
                raise InvalidArgument(
                    f"Expects arg[{index}] to be {tf_type_name(binding.dtype)} but "
                    f"{tf_type_name(sent)} is provided"
                )
            if binding.fed_shape is None:
                continue  # TensorFlow decides, as in TF Serving
            fits = len(shape) == len(binding.fed_shape) and all(
                want in (-1, got) for want, got in zip(binding.fed_shape, shape, strict=True)
            )
            if not fits:
                raise InvalidArgument(
                    f"input tensor {alias} has shape {_shape_text(shape)}, but the model's input "
                    f"takes {_shape_text(binding.fed_shape)} (-1 = any size)"
                )


def signature_map(
    meta_graph_signatures: Mapping[str, meta_graph_pb2.SignatureDef],
    placeholder_shapes: Mapping[str, tuple[int, ...] | None] | None = None,
) -> dict[str, Signature]:
    return {
        name: Signature.from_def(name, sig, placeholder_shapes)
        for name, sig in meta_graph_signatures.items()
    }


def find_signature(signatures: Mapping[str, Signature], name: str) -> Signature:
    """The signature a request names (empty: serving_default), or TF Serving's error."""
    key = name or DEFAULT_SIGNATURE
    try:
        return signatures[key]
    except KeyError:
        raise FailedPrecondition(f'Serving signature key "{key}" not found.') from None


def zeros_for(binding: TensorBinding, batch: int = 1) -> npt.NDArray[Any] | None:
    """A zero input for `binding` (unknown sizes -> `batch` then 1), or None if it cannot be made."""
    if binding.shape is None or binding.dtype == tensor_pb2.DT_STRING:
        return None
    try:
        dtype = numpy_dtype(binding.dtype)
    except TensorCodecError:
        return None
    shape = [batch if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(binding.shape)]
    return np.zeros(shape, dtype=dtype)
