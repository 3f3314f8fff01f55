"""The decode options through the gateway's routes, against a real model server (tiny demo model).

Each option is held to a reference image prepared here with Pillow and classified with the options
off: the option must give exactly the reference's logits, and without it the answer must differ.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from clothing_preproc.signature import COURSE_MODEL_NAME
from gateway import Settings, parse_settings
from testing_support.in_process_gateway import RunningGateway
from testing_support.sample_images import smooth_field
from testing_support.stack import LiveModelServer, demo_model

RunGateway = Callable[..., RunningGateway]
ORIENTATION = 0x0112  # the EXIF tag
KERAS_EXACT = {"draft": False, "exif_orientation": False, "background": None, "family": "xception",
               "size": [299, 299]}  # fmt: skip


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    with LiveModelServer(demo_model(tmp_path_factory.mktemp("models"))) as server:
        yield server


def settings(server: LiveModelServer, **variables: str) -> Settings:
    return parse_settings([], {"TF_SERVING_HOST": server.address} | variables)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Photo-like content (smooth waves plus grain) with a dark bar near the top, so that which
    way up it is matters to the model."""
    pixels = smooth_field(np.random.default_rng(seed), height, width, 3)
    pixels[height // 10 : height // 5, width // 8 : width - width // 8] //= 4
    return Image.fromarray(pixels)


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def classify(gateway: RunningGateway, data: bytes, query: str = "") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/classify?logits=true{query}",
        content=data,
        headers={"content-type": "application/octet-stream"},
        timeout=60,
    )


def logits(gateway: RunningGateway, data: bytes, query: str = "") -> list[float]:
    r = classify(gateway, data, query)
    assert r.status_code == 200, r.text
    return list(r.json()["logits"].values())


def phone_portrait() -> tuple[bytes, bytes, bytes]:
    """A portrait photo as a phone stores it: the sensor's landscape pixels plus EXIF Orientation 6
    (turn 90° clockwise to show it). Also, losslessly, the picture as it should be seen (upright)
    and as the stored pixels lie (sideways), both decoded from that JPEG."""
    upright = photo(600, 800, seed=6)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor recorded
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    jpeg = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
    decoded = Image.open(io.BytesIO(jpeg))
    assert decoded.size == (800, 600)
    assert decoded.getexif()[ORIENTATION] == 6
    decoded.load()
    shown = decoded.transpose(Image.Transpose.ROTATE_270)  # what a photo viewer shows
    assert shown.size == (600, 800)
    return jpeg, encode(shown, "PNG"), encode(decoded, "PNG")


def test_a_portrait_phone_photo_is_classified_upright_only_with_exif_orientation(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    jpeg, upright_png, sideways_png = phone_portrait()
    keras = run_gateway(settings(model_server))
    upright = logits(keras, upright_png)
    sideways = logits(keras, sideways_png)
    assert upright != sideways

    # Keras' path (the default) ignores the tag: the model sees the photo sideways.
    r = classify(keras, jpeg)
    assert r.json()["preprocessing"] == KERAS_EXACT
    assert list(r.json()["logits"].values()) == sideways
    # Asked per request, or set by the operator: exactly the upright picture's answer.
    r = classify(keras, jpeg, "&exif_orientation=true")
    assert r.json()["preprocessing"] == KERAS_EXACT | {"exif_orientation": True}
    assert list(r.json()["logits"].values()) == upright
    operator = run_gateway(settings(model_server, GATEWAY_EXIF_ORIENTATION="true"))
    assert logits(operator, jpeg) == upright
    # A client may turn the operator's default off again (the option is allowed by default).
    assert logits(operator, jpeg, "&exif_orientation=false") == sideways


def cut_out() -> Image.Image:
    """An RGBA cut-out: an opaque object on a transparent background whose hidden colours are
    noise (what Keras shows the model when it drops the alpha channel)."""
    rng = np.random.default_rng(7)
    rgba = np.empty((400, 300, 4), dtype=np.uint8)
    rgba[..., :3] = rng.integers(0, 256, size=(400, 300, 3), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[80:320, 60:240, :3] = smooth_field(rng, 240, 180, 3)
    rgba[80:320, 60:240, 3] = 255
    rgba[60:80, 60:240, 3] = 128  # a half-transparent edge
    return Image.fromarray(rgba, "RGBA")


def test_a_transparent_png_is_composited_onto_the_background_asked_for(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    img = cut_out()
    png = encode(img, "PNG")
    on_white = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    gateway = run_gateway(settings(model_server))
    dropped = logits(gateway, encode(img.convert("RGB"), "PNG"))
    white = logits(gateway, encode(on_white, "PNG"))
    assert dropped != white

    assert logits(gateway, png) == dropped  # Keras' path
    r = classify(gateway, png, "&background=ffffff")
    assert r.json()["preprocessing"]["background"] == "#ffffff"
    assert list(r.json()["logits"].values()) == white
    operator = run_gateway(settings(model_server, GATEWAY_ALPHA_BACKGROUND="255,255,255"))
    assert logits(operator, png) == white
    assert logits(operator, png, "&background=none") == dropped


def test_draft_decoding_of_a_large_photo_keeps_the_top_class_and_says_so(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    jpeg = encode(photo(4000, 3000, seed=40), "JPEG", quality=90)
    gateway = run_gateway(settings(model_server, GATEWAY_REQUEST_OPTIONS="all"))
    exact = classify(gateway, jpeg).json()
    draft = classify(gateway, jpeg, "&draft=true").json()
    assert exact["preprocessing"]["draft"] is False
    assert draft["preprocessing"] == KERAS_EXACT | {"draft": True}
    # Decoded at 1/8 scale the pixels differ a little, and so do the logits; the answer does not.
    assert draft["logits"] != exact["logits"]
    assert draft["top"][0]["label"] == exact["top"][0]["label"]
    changes = [abs(a - b) for a, b in zip(draft["logits"].values(), exact["logits"].values(), strict=True)]
    assert max(changes) < 0.05
    # The operator's default: draft for every request, without asking.
    operator = run_gateway(settings(model_server, GATEWAY_DRAFT_DECODE="true"))
    assert classify(operator, jpeg).json()["logits"] == draft["logits"]


def v2_body(data: bytes, **parameters: object) -> dict[str, object]:
    image = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}
    body: dict[str, object] = {"inputs": [image]}
    if parameters:
        body["parameters"] = parameters
    return body


def test_an_option_the_operator_keeps_is_refused_on_every_route(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    jpeg = encode(photo(320, 240, seed=1), "JPEG", quality=90)
    b64 = base64.b64encode(jpeg).decode()
    gateway = run_gateway(settings(model_server))  # clients may set exif_orientation and background
    calls = {
        "/predict": {"json": {"b64": b64}},
        "/v1/classify": {"content": jpeg, "headers": {"content-type": "image/jpeg"}},
        "/v1/classify/batch": {"json": {"images": [{"b64": b64}]}},
        f"/v1/models/{COURSE_MODEL_NAME}:predict": {"json": {"instances": [{"b64": b64}]}},
        f"/v2/models/{COURSE_MODEL_NAME}/infer": {"json": v2_body(jpeg)},
    }
    for path, kwargs in calls.items():
        r = httpx.post(f"{gateway.url}{path}?draft=true", timeout=30, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 400, path
        message = r.json()["error"]
        message = message["message"] if isinstance(message, dict) else message
        assert message.startswith("draft cannot be set per request"), (path, message)
        bad = httpx.post(f"{gateway.url}{path}?background=fff", timeout=30, **kwargs)  # type: ignore[arg-type]
        assert bad.status_code == 400, path
        allowed = httpx.post(f"{gateway.url}{path}?exif_orientation=1", timeout=30, **kwargs)  # type: ignore[arg-type]
        assert allowed.status_code == 200, path
    r = httpx.post(f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}/infer", json=v2_body(jpeg, draft=True))
    assert r.status_code == 400
    assert r.json()["error"].startswith("draft cannot be set per request")
    closed = run_gateway(settings(model_server, GATEWAY_REQUEST_OPTIONS="none"))
    r = classify(closed, jpeg, "&exif_orientation=false")
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("exif_orientation cannot be set per request")


def test_every_answer_says_which_options_shaped_it(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    jpeg = encode(photo(320, 240, seed=2), "JPEG", quality=90)
    b64 = base64.b64encode(jpeg).decode()
    gateway = run_gateway(
        settings(model_server, GATEWAY_EXIF_ORIENTATION="true", GATEWAY_ALPHA_BACKGROUND="#102030")
    )
    expected = KERAS_EXACT | {"exif_orientation": True, "background": "#102030"}
    header = "draft=false, exif_orientation=true, background=#102030, family=xception, size=299x299"

    r = httpx.post(f"{gateway.url}/predict", json={"b64": b64})
    assert r.headers["x-preprocessing"] == header
    assert "preprocessing" not in r.json()  # the course's shape: {class: logit}
    for r in (
        httpx.post(f"{gateway.url}/v1/classify", json={"b64": b64}),
        httpx.post(f"{gateway.url}/v1/classify/batch", json={"images": [{"b64": b64}, {"b64": "@@"}]}),
    ):
        assert r.status_code == 200
        assert r.json()["preprocessing"] == expected
        assert r.headers["x-preprocessing"] == header
    r = httpx.post(f"{gateway.url}/v1/models/{COURSE_MODEL_NAME}:predict", json={"instances": [{"b64": b64}]})
    assert r.status_code == 200
    assert set(r.json()) == {"predictions"}
    assert r.headers["x-preprocessing"] == header

    # KServe v2: the answer's parameters too, and the request's parameters may set an option.
    r = httpx.post(
        f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}/infer", json=v2_body(jpeg, exif_orientation=False)
    )
    assert r.status_code == 200
    assert r.json()["parameters"] == {
        "draft": False,
        "exif_orientation": False,
        "background": "#102030",
        "family": "xception",
        "size": "299x299",
    }
    assert r.headers["x-preprocessing"] == header.replace("exif_orientation=true", "exif_orientation=false")
    # With the binary data extension the JSON header carries them as well.
    header_json = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(jpeg) + 4}}],
         "parameters": {"binary_data_output": True}}
    ).encode()  # fmt: skip
    r = httpx.post(
        f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}/infer?background=none",
        content=header_json + struct.pack("<I", len(jpeg)) + jpeg,
        headers={
            "inference-header-content-length": str(len(header_json)),
            "content-type": "application/octet-stream",
        },
    )
    assert r.status_code == 200
    length = int(r.headers["inference-header-content-length"])
    assert json.loads(r.content[:length])["parameters"]["background"] == "none"
    assert "background=none" in r.headers["x-preprocessing"]
