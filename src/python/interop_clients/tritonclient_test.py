"""Triton's own clients (`tritonclient.http` and `tritonclient.grpc`) against the gateway in front of
the real model server: the same float32 logits as the gateway's own route, version pinning through
the protocol's `model_version`, and errors in the protocol's shape."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from interop_clients.stack import IMAGES, MODEL_NAME, Stack


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-data"])
def test_http_client_gets_the_gateways_numbers(stack: Stack, binary: bool) -> None:
    client = triton_http.InferenceServerClient(stack.url.removeprefix("http://"), network_timeout=60)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    image = triton_http.InferInput("image", [len(IMAGES)], "BYTES")
    # JSON strings cannot hold raw bytes: without binary data the elements are base64 text.
    data = IMAGES if binary else [base64.b64encode(i) for i in IMAGES]
    image.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    outputs = [triton_http.InferRequestedOutput("logits", binary_data=binary)]
    result = client.infer(MODEL_NAME, [image], outputs=outputs, model_version="1")
    logits = result.as_numpy("logits")
    assert logits is not None
    assert logits.dtype == np.float32
    for row, encoded in zip(logits, IMAGES, strict=True):
        assert row.tolist() == stack.own_logits(encoded).tolist()
    assert result.get_response()["model_version"] == "1"


def test_grpc_client_gets_the_gateways_numbers(stack: Stack) -> None:
    client = triton_grpc.InferenceServerClient(stack.grpc_address)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    metadata = client.get_model_metadata(MODEL_NAME, as_json=True)
    assert [i["name"] for i in metadata["inputs"]] == ["image"]
    image = triton_grpc.InferInput("image", [len(IMAGES)], "BYTES")
    image.set_data_from_numpy(np.array(IMAGES, dtype=np.object_))
    result = client.infer(
        MODEL_NAME,
        [image],
        outputs=[triton_grpc.InferRequestedOutput(n) for n in ("logits", "labels")],
        request_id="triton-grpc-1",
    )
    logits = result.as_numpy("logits")
    assert logits is not None
    assert logits.dtype == np.float32
    for row, encoded in zip(logits, IMAGES, strict=True):
        assert row.tolist() == stack.own_logits(encoded).tolist()
    labels = result.as_numpy("labels")
    assert labels is not None
    assert len(labels) == 10
    assert result.get_response().id == "triton-grpc-1"


def test_grpc_errors_name_the_image_and_the_model(stack: Stack) -> None:
    client = triton_grpc.InferenceServerClient(stack.grpc_address)
    image = triton_grpc.InferInput("image", [2], "BYTES")
    image.set_data_from_numpy(np.array([IMAGES[0], b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="image 2") as e:
        client.infer(MODEL_NAME, [image])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="no model named") as e:
        client.infer("other-model", [image])
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_http_unknown_version_is_404_listing_versions(stack: Stack) -> None:
    client = triton_http.InferenceServerClient(stack.url.removeprefix("http://"), network_timeout=60)
    image = triton_http.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array(IMAGES[:1], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException, match="versions available: 1") as e:
        client.infer(MODEL_NAME, [image], model_version="7")
    assert e.value.status() == "404"
