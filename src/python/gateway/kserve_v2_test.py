"""Parsing v2 inference requests: the JSON and binary forms, and what is refused before any image
is looked at (the answers a client sees are in kserve_v2_client_test.py and api_test.py)."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.kserve_v2 import InferRequest


def binary_request(
    elements: list[bytes], count: int | None = None, size: int | None = None
) -> tuple[bytes, str]:
    data = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    tensor = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [len(elements) if count is None else count],
        "parameters": {"binary_data_size": len(data) if size is None else size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + data, str(len(header))


def parse(body: bytes, header: str | None = None, max_bytes: int = 100) -> InferRequest:
    return InferRequest.from_rest(body, header, max_images=4, max_image_bytes=max_bytes)


def test_binary_elements_are_the_raw_bytes_in_order() -> None:
    request = parse(*binary_request([b"first", b"", b"third"]))
    assert [s.data for s in request.sources] == [b"first", b"", b"third"]
    assert request.outputs == ("probabilities", "logits", "labels")


def test_json_data_may_be_written_as_n_by_1() -> None:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [2, 1], "data": [["QUJD"], ["REVG"]]}
    request = parse(json.dumps({"inputs": [tensor], "outputs": [{"name": "labels"}]}).encode())
    assert [s.b64 for s in request.sources] == ["QUJD", "REVG"]
    assert request.outputs == ("labels",)
    assert request.binary == {"labels": False}


@pytest.mark.parametrize(
    ("elements", "count", "size", "words"),
    [
        ([b"a", b"b"], 3, None, "ends before image 3"),
        ([b"a", b"b"], 1, None, "more than the 1 elements"),
        ([b"abc"], None, 2, "binary_data_size"),
    ],
)
def test_binary_data_that_does_not_add_up_is_a_400(
    elements: list[bytes], count: int | None, size: int | None, words: str
) -> None:
    body, header = binary_request(elements, count, size)
    with pytest.raises(BadRequest, match=words):
        parse(body, header)


def test_an_element_over_the_byte_limit_is_refused_from_its_length() -> None:
    # The length prefix alone says it: nothing past it is read.
    body, header = binary_request([b"x" * 10])
    with pytest.raises(PayloadTooLarge, match="the image is 10 bytes"):
        parse(body, header, max_bytes=9)


@pytest.mark.parametrize(
    "document",
    [
        {"inputs": []},
        {"inputs": [{"name": "input0", "datatype": "BYTES", "shape": [1], "data": ["QUJD"]}]},
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [5], "data": ["QUJD"] * 5}]},
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [7]}]},
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["QUJD"]}], "outputs": [{}]},
    ],
    ids=["no-input", "other-name", "over-the-batch", "not-strings", "unknown-output"],
)
def test_malformed_requests_are_a_400(document: object) -> None:
    with pytest.raises(BadRequest):
        parse(json.dumps(document).encode())
