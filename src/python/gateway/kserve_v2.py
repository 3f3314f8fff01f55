"""KServe's Open Inference Protocol (v2) over REST: request bodies -> `ImageSource`s, results -> v2 outputs.

An adapter only: the images go to `Classifier.classify` like every other route's, and errors are
answered by the app's one handler (in v2's `{"error": "…"}` shape on these paths).

The model takes one input, `image`, of datatype `BYTES`: one element per encoded image file
(JPEG, PNG, WebP, …), in JSON as base64 strings (JSON strings cannot carry raw bytes) or as raw
bytes with the binary tensor data extension (the JSON header's length in the
`Inference-Header-Content-Length` header, then each element as a 4-byte little-endian length and
its bytes). It answers `probabilities` and `logits` (FP32, `[N, classes]`) and `labels` (BYTES,
`[classes]`, the class names in score order), as JSON or, when asked (`binary_data` on an output,
`binary_data_output` on the request), as binary data after the JSON header.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.classify import ImageResult, ImageSource
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.inputs import parse_json

INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "logits", "labels")
HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")


def metadata(name: str, versions: Sequence[int], labels: Sequence[str]) -> dict[str, object]:
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": "clothing-classifier-gateway",
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]},
            {"name": "labels", "datatype": "BYTES", "shape": [len(labels)]},
        ],
    }


class InferRequest:
    """One v2 inference request: its images and which outputs it wants, how."""

    def __init__(
        self, body: bytes, header_length: str | None, *, max_images: int, max_image_bytes: int
    ) -> None:
        binary = b""
        if header_length is not None:
            if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
                raise BadRequest(f"{HEADER_LENGTH} must be the JSON header's length, at most the body's")
            split = int(header_length)
            body, binary = body[:split], body[split:]
        document = parse_json(body)
        if not isinstance(document, dict):
            raise BadRequest("the inference request must be a JSON object")
        self.id = document.get("id")
        if self.id is not None and not isinstance(self.id, str):
            raise BadRequest('"id" must be a string')
        inputs = document.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise BadRequest(f'"inputs" must hold one input, "{INPUT_NAME}" (BYTES: encoded images)')
        tensor = inputs[0]
        if tensor.get("name") != INPUT_NAME or tensor.get("datatype") != "BYTES":
            raise BadRequest(f'the input must be named "{INPUT_NAME}" with datatype BYTES (encoded images)')
        count = _element_count(tensor.get("shape"))
        if count > max_images:
            raise BadRequest(f"{count} images in one request; the limit is {max_images}")
        size = _parameters(tensor).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
                raise BadRequest("binary_data_size must be the length of the binary data after the JSON")
            self.sources = [ImageSource(data=d) for d in _binary_elements(binary, count, max_image_bytes)]
        else:
            if binary:
                raise BadRequest("binary data after the JSON header but no input says binary_data_size")
            self.sources = _json_elements(tensor.get("data"), count)
        self.outputs, self.binary = _requested_outputs(document)


def _parameters(obj: dict[str, Any]) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest('"parameters" must be an object')
    return params


def _element_count(shape: Any) -> int:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadRequest('"shape" must be [N] (or [N, 1]): one element per image')
    if len(shape) == 2 and shape[1] != 1:
        raise BadRequest('"shape" must be [N] (or [N, 1]): one element per image')
    if shape[0] == 0:
        raise BadRequest("no image given")
    return int(shape[0])


def _json_elements(data: Any, count: int) -> list[ImageSource]:
    if isinstance(data, list) and all(isinstance(d, list) and len(d) == 1 for d in data):
        data = [d[0] for d in data]  # [[…], […]]: the [N, 1] shape written out
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise BadRequest('"data" must be a list of base64 strings, one per image (or use binary data)')
    if len(data) != count:
        raise BadRequest(f'"data" has {len(data)} elements; the shape says {count}')
    return [ImageSource(b64=d) for d in data]


def _binary_elements(binary: bytes, count: int, max_image_bytes: int) -> list[bytes]:
    view = memoryview(binary)
    out: list[bytes] = []
    offset = 0
    for i in range(count):
        what = f"image {i + 1}" if count > 1 else "the image"
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


def _requested_outputs(document: dict[str, Any]) -> tuple[list[str], dict[str, bool]]:
    all_binary = _parameters(document).get("binary_data_output", False) is True
    requested = document.get("outputs")
    if requested is None:
        return list(OUTPUT_NAMES), dict.fromkeys(OUTPUT_NAMES, all_binary)
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequest('"outputs" must be a list of {"name": …} objects')
    names: list[str] = []
    binary: dict[str, bool] = {}
    for output in requested:
        name = output.get("name")
        if name not in OUTPUT_NAMES:
            raise BadRequest(f"unknown output {str(name)[:40]!r}; the outputs are {', '.join(OUTPUT_NAMES)}")
        names.append(name)
        binary[name] = _parameters(output).get("binary_data", all_binary) is True
    return names, binary


def infer_response(
    request: InferRequest,
    model: str,
    version: int | None,
    results: Sequence[ImageResult],
    labels: Sequence[str],
) -> tuple[bytes, int | None]:
    """The answer's body and, when some output is binary, the length of its JSON header."""
    probabilities = np.array([list(r.probabilities().values()) for r in results], dtype=np.float32)
    logits = np.array([r.logits for r in results], dtype=np.float32)
    outputs: list[dict[str, object]] = []
    blobs: list[bytes] = []
    for name in request.outputs:
        if name == "labels":
            shape, datatype = [len(labels)], "BYTES"
            json_data: list[Any] = list(labels)
            raw = b"".join(_LENGTH.pack(len(b)) + b for b in (label.encode() for label in labels))
        else:
            array = probabilities if name == "probabilities" else logits
            shape, datatype = list(array.shape), "FP32"
            json_data = [float(x) for x in array.reshape(-1)]
            raw = array.astype("<f4").tobytes()
        output: dict[str, object] = {"name": name, "datatype": datatype, "shape": shape}
        if request.binary[name]:
            output["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            output["data"] = json_data
        outputs.append(output)
    body: dict[str, object] = {"model_name": model, "outputs": outputs}
    if version is not None:
        body["model_version"] = str(version)
    if request.id is not None:
        body["id"] = request.id
    header = json.dumps(body, allow_nan=False).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def element_limit(max_images: int, max_image_bytes: int) -> int:
    """Largest binary section: every image at the byte limit with its length prefix."""
    return max_images * (max_image_bytes + _LENGTH.size)

