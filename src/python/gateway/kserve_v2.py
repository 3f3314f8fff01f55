"""KServe's Open Inference Protocol (v2): one request and answer model, read from REST or gRPC.

A v2 inference request, whatever carries it, becomes one `InferRequest` (its images as
`ImageSource`s, the outputs it wants and whether each travels as raw bytes); its answer is one list
of `OutputTensor`s. Only the transport differs: `InferRequest.from_rest` and `infer_response` read
and write the REST form (JSON, and the binary tensor data extension), `gateway.kserve_v2_grpc`
the gRPC one (`inference.GRPCInferenceService`). The images go to `Classifier.classify` like every
other route's, and errors are answered by the one mapping in errors.py.

The model takes one input, `image`, of datatype `BYTES`: one element per encoded image file
(JPEG, PNG, WebP, …). Over REST the elements are base64 strings in JSON (JSON strings cannot carry
raw bytes) or raw bytes with the binary tensor data extension (the JSON header's length in the
`Inference-Header-Content-Length` header, then each element as a 4-byte little-endian length and
its bytes); over gRPC they are `contents.bytes_contents`, or `raw_input_contents` laid out as the
binary extension's. It answers `probabilities` and `logits` (FP32, `[N, classes]`) and `labels`
(BYTES, `[classes]`, the class names in score order), as typed data or, when asked, raw bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.classify import ImageResult, ImageSource
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.inputs import parse_json

INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "logits", "labels")
HEADER_LENGTH = "inference-header-content-length"
PLATFORM = "clothing-classifier-gateway"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class TensorSpec:
    """An input's or output's name, datatype and shape (-1: any size), as metadata gives them."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def tensor_specs(labels: Sequence[str]) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs."""
    classes = len(labels)
    inputs = (TensorSpec(INPUT_NAME, "BYTES", (-1,)),)
    outputs = (
        TensorSpec("probabilities", "FP32", (-1, classes)),
        TensorSpec("logits", "FP32", (-1, classes)),
        TensorSpec("labels", "BYTES", (classes,)),
    )
    return inputs, outputs


def metadata(name: str, versions: Sequence[int], labels: Sequence[str]) -> dict[str, object]:
    """The REST form of the model's metadata."""
    inputs, outputs = tensor_specs(labels)
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in outputs],
    }


@dataclass(frozen=True)
class InferRequest:
    """One v2 inference request: its images, and which outputs it wants, each as raw bytes or not."""

    sources: tuple[ImageSource, ...]
    outputs: tuple[str, ...] = OUTPUT_NAMES
    binary: Mapping[str, bool] = field(default_factory=lambda: dict.fromkeys(OUTPUT_NAMES, False))
    id: str | None = None
    # The request's own parameters, flat (booleans, numbers, strings): the decode options among
    # them (decode_options.py).
    parameters: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_rest(
        cls, body: bytes, header_length: str | None, *, max_images: int, max_image_bytes: int
    ) -> InferRequest:
        """A REST body: JSON, or JSON then binary data when `header_length` (the
        Inference-Header-Content-Length header) is given."""
        binary = b""
        if header_length is not None:
            if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
                raise BadRequest(f"{HEADER_LENGTH} must be the JSON header's length, at most the body's")
            split = int(header_length)
            body, binary = body[:split], body[split:]
        document = parse_json(body)
        if not isinstance(document, dict):
            raise BadRequest("the inference request must be a JSON object")
        request_id = document.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise BadRequest('"id" must be a string')
        parameters = _parameters(document)
        inputs = document.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise BadRequest(f'"inputs" must hold one input, "{INPUT_NAME}" (BYTES: encoded images)')
        tensor = inputs[0]
        count = image_count(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), max_images)
        size = _parameters(tensor).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
                raise BadRequest("binary_data_size must be the length of the binary data after the JSON")
            sources = tuple(ImageSource(data=d) for d in binary_elements(binary, count, max_image_bytes))
        else:
            if binary:
                raise BadRequest("binary data after the JSON header but no input says binary_data_size")
            sources = _json_elements(tensor.get("data"), count)
        requested = document.get("outputs")
        if requested is not None:
            if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
                raise BadRequest('"outputs" must be a list of {"name": …} objects')
            requested = [(o.get("name"), _parameters(o).get("binary_data")) for o in requested]
        outputs, binary_outputs = requested_outputs(
            requested, parameters.get("binary_data_output", False) is True
        )
        return cls(sources, outputs, binary_outputs, request_id, parameters)


def _parameters(obj: dict[str, Any]) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest('"parameters" must be an object')
    return params


def image_count(name: object, datatype: object, shape: Any, max_images: int) -> int:
    """The number of images the input tensor holds, once its name, datatype and shape are checked."""
    if name != INPUT_NAME or datatype != "BYTES":
        raise BadRequest(f'the input must be named "{INPUT_NAME}" with datatype BYTES (encoded images)')
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequest('"shape" must be [N] (or [N, 1]): one element per image')
    if shape[0] == 0:
        raise BadRequest("no image given")
    if shape[0] > max_images:
        raise BadRequest(f"{shape[0]} images in one request; the limit is {max_images}")
    return int(shape[0])


def _what(index: int, count: int) -> str:
    return f"image {index + 1}" if count > 1 else "the image"


def _json_elements(data: Any, count: int) -> tuple[ImageSource, ...]:
    if isinstance(data, list) and all(isinstance(d, list) and len(d) == 1 for d in data):
        data = [d[0] for d in data]  # [[…], […]]: the [N, 1] shape written out
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise BadRequest('"data" must be a list of base64 strings, one per image (or use binary data)')
    if len(data) != count:
        raise BadRequest(f'"data" has {len(data)} elements; the shape says {count}')
    return tuple(ImageSource(b64=d) for d in data)


def binary_elements(binary: bytes, count: int, max_image_bytes: int) -> list[bytes]:
    """The elements of a raw BYTES tensor: each a 4-byte little-endian length and its bytes. An
    element over the byte limit is refused from its length, before its bytes are copied."""
    view = memoryview(binary)
    out: list[bytes] = []
    offset = 0
    for i in range(count):
        what = _what(i, count)
        if offset + _LENGTH.size > len(view):
            raise BadRequest(f"the binary data ends before {what}'s length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if length > max_image_bytes:
            raise PayloadTooLarge(f"{what} is {length} bytes; the limit is {max_image_bytes}")
        if offset + length > len(view):
            raise BadRequest(f"the binary data ends inside {what}")
        out.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise BadRequest(f"the binary data holds more than the {count} elements its shape says")
    return out


def sized_elements(elements: Sequence[bytes], count: int, max_image_bytes: int) -> list[bytes]:
    """Typed BYTES elements (gRPC's `bytes_contents`), checked against the shape and the byte limit."""
    if len(elements) != count:
        raise BadRequest(f"the input has {len(elements)} elements; its shape says {count}")
    for i, element in enumerate(elements):
        if len(element) > max_image_bytes:
            what = _what(i, count)
            raise PayloadTooLarge(f"{what} is {len(element)} bytes; the limit is {max_image_bytes}")
    return list(elements)


def requested_outputs(
    requested: Iterable[tuple[object, object]] | None, all_binary: bool
) -> tuple[tuple[str, ...], dict[str, bool]]:
    """The outputs asked for, as (name, its binary_data parameter or None) pairs, in order; None or
    nothing asked: every output. Each is raw bytes when its parameter says so, else `all_binary`."""
    pairs = list(requested) if requested is not None else []
    if not pairs:
        return OUTPUT_NAMES, dict.fromkeys(OUTPUT_NAMES, all_binary)
    names: list[str] = []
    binary: dict[str, bool] = {}
    for name, wants_binary in pairs:
        if not isinstance(name, str) or name not in OUTPUT_NAMES:
            raise BadRequest(f"unknown output {str(name)[:40]!r}; the outputs are {', '.join(OUTPUT_NAMES)}")
        names.append(name)
        binary[name] = all_binary if wants_binary is None else wants_binary is True
    return tuple(names), binary


@dataclass(frozen=True)
class OutputTensor:
    """One output of the answer: FP32 `values`, or BYTES `texts`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: npt.NDArray[np.float32] | None = None
    texts: tuple[str, ...] = ()

    def raw(self) -> bytes:
        """The elements as raw bytes: little-endian float32s, or length-prefixed strings."""
        if self.values is not None:
            return self.values.astype("<f4").tobytes()
        return b"".join(_LENGTH.pack(len(b)) + b for b in (t.encode() for t in self.texts))

    def data(self) -> list[Any]:
        """The elements as JSON values, flat and row-major."""
        if self.values is not None:
            return [float(x) for x in self.values.reshape(-1)]
        return list(self.texts)


def output_tensors(
    request: InferRequest, results: Sequence[ImageResult], labels: Sequence[str]
) -> list[OutputTensor]:
    """The outputs the request asked for, in its order."""
    probabilities = np.array([list(r.probabilities().values()) for r in results], dtype=np.float32)
    logits = np.array([r.logits for r in results], dtype=np.float32)
    out: list[OutputTensor] = []
    for name in request.outputs:
        if name == "labels":
            out.append(OutputTensor(name, "BYTES", (len(labels),), texts=tuple(labels)))
        else:
            array = probabilities if name == "probabilities" else logits
            out.append(OutputTensor(name, "FP32", tuple(array.shape), values=array))
    return out


def infer_response(
    request: InferRequest,
    model: str,
    version: int | None,
    results: Sequence[ImageResult],
    labels: Sequence[str],
    *,
    parameters: Mapping[str, object] | None = None,
) -> tuple[bytes, int | None]:
    """The REST answer's body and, when some output is binary, the length of its JSON header.
    `parameters`: the answer's own (flat: booleans, numbers, strings), e.g. the decode options."""
    outputs: list[dict[str, object]] = []
    blobs: list[bytes] = []
    for tensor in output_tensors(request, results, labels):
        output: dict[str, object] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if request.binary[tensor.name]:
            raw = tensor.raw()
            output["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            output["data"] = tensor.data()
        outputs.append(output)
    body: dict[str, object] = {"model_name": model, "outputs": outputs}
    if version is not None:
        body["model_version"] = str(version)
    if request.id is not None:
        body["id"] = request.id
    if parameters:
        body["parameters"] = dict(parameters)
    header = json.dumps(body, allow_nan=False).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def element_limit(max_images: int, max_image_bytes: int) -> int:
    """Largest binary section: every image at the byte limit with its length prefix."""
    return max_images * (max_image_bytes + _LENGTH.size)
