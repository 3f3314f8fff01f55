"""The gateway's KServe v2 routes called by Triton's own HTTP client (`tritonclient[http]`), JSON
and binary data, against a stand-in TF Serving on loopback whose logits follow the pixels (so
every image gets its own numbers). The real model server's answers are in api_test.py.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from clothing_preproc import CLOTHING_LABELS
from clothing_preproc.signature import COURSE_MODEL_NAME
from gateway import parse_settings
from testing_support.image_host import image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.pixel_means_serving import pixel_means_serving

RunGateway = Callable[..., RunningGateway]
IMAGES = [
    image_bytes("JPEG", (640, 480), (200, 30, 60)),
    image_bytes("PNG", (300, 500), (20, 40, 220)),
    image_bytes("WEBP", (120, 90), (30, 200, 60)),
]


@pytest.fixture(scope="module")
def tf_serving() -> Iterator[str]:
    with pixel_means_serving() as address:
        yield address


@pytest.fixture()
def gateway(run_gateway: RunGateway, tf_serving: str) -> RunningGateway:
    return run_gateway(parse_settings([], {"TF_SERVING_HOST": tf_serving}))


def client(gateway: RunningGateway) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(gateway.url.removeprefix("http://"))


def own_logits(gateway: RunningGateway, image: bytes) -> list[float]:
    r = httpx.post(
        f"{gateway.url}/v1/classify?logits=true", content=image, headers={"content-type": "image/*"}
    )
    assert r.status_code == 200
    return list(r.json()["logits"].values())


def test_health_and_metadata(gateway: RunningGateway) -> None:
    c = client(gateway)
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready(COURSE_MODEL_NAME)
    assert not c.is_model_ready("other-model")
    meta = c.get_model_metadata(COURSE_MODEL_NAME)
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "logits", "labels"}


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-input", "binary-input"])
@pytest.mark.parametrize(
    "binary_out", [False, True, None], ids=["json-output", "binary-output", "default-output"]
)
def test_triton_client_gets_the_gateways_numbers(
    gateway: RunningGateway, binary_in: bool, binary_out: bool | None
) -> None:
    image = triton.InferInput("image", [len(IMAGES)], "BYTES")
    if binary_in:
        image.set_data_from_numpy(np.array(IMAGES, dtype=np.object_), binary_data=True)
    else:
        # JSON strings cannot hold raw bytes: the elements are base64 text.
        texts = [base64.b64encode(i) for i in IMAGES]
        image.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=False)
    outputs = None
    if binary_out is not None:
        outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("logits", "labels")]
    result = client(gateway).infer(COURSE_MODEL_NAME, [image], outputs=outputs, request_id="42")
    logits = result.as_numpy("logits")
    assert logits is not None
    assert logits.dtype == np.float32
    assert logits.shape == (len(IMAGES), 10)
    for row, encoded in zip(logits, IMAGES, strict=True):
        assert row.tolist() == np.array(own_logits(gateway, encoded), np.float32).tolist()
    labels = result.as_numpy("labels")
    assert labels is not None
    assert [x.decode() if isinstance(x, bytes) else x for x in labels.tolist()] == list(CLOTHING_LABELS)
    response = result.get_response()
    assert response["model_name"] == COURSE_MODEL_NAME
    assert (response["model_version"], response["id"]) == ("1", "42")
    if binary_out is None:
        probabilities = result.as_numpy("probabilities")
        assert probabilities is not None
        assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(IMAGES)), rel=1e-5)


def test_errors_reach_the_client_in_v2s_shape(gateway: RunningGateway) -> None:
    image = triton.InferInput("image", [2], "BYTES")
    image.set_data_from_numpy(np.array([IMAGES[0], b"not an image"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException, match="image 2") as e:
        client(gateway).infer(COURSE_MODEL_NAME, [image])
    assert e.value.status() == "415"
    with pytest.raises(InferenceServerException, match="no model named") as e:
        client(gateway).infer("other-model", [image])
    assert e.value.status() == "404"
