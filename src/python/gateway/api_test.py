"""The API against a real local model server process serving the tiny demo model."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from clothing_preproc import CLOTHING_LABELS
from clothing_preproc.signature import COURSE_MODEL_NAME
from gateway import Settings, parse_settings
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.stack import LiveModelServer, demo_model

RunGateway = Callable[..., RunningGateway]

RED = image_bytes("JPEG", (640, 480), (200, 30, 60))
BLUE = image_bytes("PNG", (300, 500), (20, 40, 220))
GREEN = image_bytes("WEBP", (120, 90), (30, 200, 60))


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    with LiveModelServer(demo_model(tmp_path_factory.mktemp("models"))) as server:
        yield server


@pytest.fixture()
def images(image_host: ImageHost) -> ImageHost:
    image_host.routes["/red.jpg"] = Reply(200, RED, {"Content-Type": "image/jpeg"})
    image_host.routes["/blue.png"] = Reply(200, BLUE)
    image_host.routes["/green.webp"] = Reply(200, GREEN)
    image_host.routes["/notes.txt"] = Reply(200, b"just some text")
    image_host.routes["/missing.jpg"] = Reply(404, b"")
    return image_host


def gateway_settings(server: LiveModelServer, **variables: str) -> Settings:
    """The gateway in front of `server`, configured by these environment variables, its images
    served on loopback."""
    environ = {"TF_SERVING_HOST": server.address, "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8"}
    return parse_settings([], environ | variables)


@pytest.fixture()
def gateway(run_gateway: RunGateway, model_server: LiveModelServer) -> RunningGateway:
    return run_gateway(gateway_settings(model_server))


def test_the_course_request_gets_the_course_answer(gateway: RunningGateway, images: ImageHost) -> None:
    r = httpx.post(f"{gateway.url}/predict", json={"url": images.url("/red.jpg")})
    assert r.status_code == 200
    scores = r.json()
    assert list(scores) == list(CLOTHING_LABELS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    # The same numbers as the richer endpoint's raw logits for the same image.
    rich = httpx.post(f"{gateway.url}/v1/classify?logits=true", json={"url": images.url("/red.jpg")}).json()
    assert rich["logits"] == scores


def test_the_pixels_and_float32_signatures_give_the_same_answer(
    run_gateway: RunGateway, model_server: LiveModelServer, images: ImageHost
) -> None:
    # Sending uint8 pixels (normalised in the graph) or float32 images normalised here must not
    # change a single bit of the logits, one image or a batch.
    pixels = run_gateway(gateway_settings(model_server))
    floats = run_gateway(gateway_settings(model_server, GATEWAY_SIGNATURE="serving_default"))
    urls = [images.url(p) for p in ("/red.jpg", "/blue.png", "/green.webp")]
    answers = {}
    for name, gw in (("pixels", pixels), ("serving_default", floats)):
        one = [httpx.post(f"{gw.url}/v1/classify?logits=true", json={"url": u}).json() for u in urls]
        batch = httpx.post(f"{gw.url}/v1/classify/batch?logits=true", json={"urls": urls}).json()
        assert {a["model"]["signature"] for a in one} == {batch["model"]["signature"]} == {name}
        answers[name] = ([a["logits"] for a in one], [r["logits"] for r in batch["results"]])
    assert answers["pixels"] == answers["serving_default"]
    assert len({tuple(v.values()) for v in answers["pixels"][0]}) == 3  # three different images


def test_url_upload_and_raw_body_give_the_same_answer(gateway: RunningGateway, images: ImageHost) -> None:
    by_url = httpx.post(f"{gateway.url}/v1/classify", json={"url": images.url("/red.jpg")})
    by_upload = httpx.post(f"{gateway.url}/v1/classify", files={"image": ("red.jpg", RED, "image/jpeg")})
    by_body = httpx.post(f"{gateway.url}/v1/classify", content=RED, headers={"content-type": "image/jpeg"})
    answers = [r.json() for r in (by_url, by_upload, by_body)]
    assert [r.status_code for r in (by_url, by_upload, by_body)] == [200, 200, 200]
    assert answers[0]["probabilities"] == answers[1]["probabilities"] == answers[2]["probabilities"]
    body = answers[0]
    # The export's pixels signature, found by GetModelMetadata: uint8 sent, normalised by the model.
    assert body["model"] == {"name": COURSE_MODEL_NAME, "version": 1, "signature": "pixels"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    top = body["top"]
    assert len(top) == 3
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert top[0]["probability"] == max(body["probabilities"].values())
    assert set(body["timings_ms"]) == {"fetch", "queue", "decode", "preprocess", "predict", "total"}
    assert answers[1]["timings_ms"]["fetch"] == 0
    assert "logits" not in body


def test_a_batch_is_one_call_with_answers_in_order(gateway: RunningGateway, images: ImageHost) -> None:
    urls = [images.url(p) for p in ("/red.jpg", "/blue.png", "/green.webp")]
    batch = httpx.post(f"{gateway.url}/v1/classify/batch?top_k=1", json={"urls": urls})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert len(results) == 3
    for url, result in zip(urls, results, strict=True):
        single = httpx.post(f"{gateway.url}/v1/classify", json={"url": url}).json()
        assert result["probabilities"] == pytest.approx(single["probabilities"], rel=1e-5)
        assert len(result["top"]) == 1
    uploads = httpx.post(
        f"{gateway.url}/v1/classify/batch",
        files=[("images", ("b.png", BLUE, "image/png")), ("images", ("r.jpg", RED, "image/jpeg"))],
    ).json()["results"]
    assert uploads[0]["probabilities"] == pytest.approx(results[1]["probabilities"], rel=1e-5)
    assert uploads[1]["probabilities"] == pytest.approx(results[0]["probabilities"], rel=1e-5)


def _truncated_jpeg() -> bytes:
    return RED[: len(RED) // 2]


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        (
            lambda url: {"files": {"image": ("notes.txt", b"just some text", "text/plain")}},
            415,
            "not_an_image",
        ),
        (lambda url: {"json": {"url": url("/notes.txt")}}, 415, "not_an_image"),
        (lambda url: {"content": b"", "headers": {"content-type": "image/jpeg"}}, 415, "not_an_image"),
        (
            lambda url: {"content": _truncated_jpeg(), "headers": {"content-type": "image/jpeg"}},
            422,
            "unreadable_image",
        ),
        (lambda url: {"content": _huge_png(), "headers": {"content-type": "image/png"}}, 413, "too_large"),
        (lambda url: {"json": {"url": url("/missing.jpg")}}, 502, "image_host_failed"),
        (lambda url: {"json": {"url": "http://10.0.0.1/x.jpg"}}, 400, "url_not_allowed"),
    ],
    ids=["upload-text", "url-text", "empty", "truncated", "too-many-pixels", "host-404", "private-url"],
)
def test_bad_images_get_their_status(
    run_gateway: RunGateway,
    model_server: LiveModelServer,
    images: ImageHost,
    send: Callable[[Callable[[str], str]], dict[str, object]],
    status: int,
    code: str,
) -> None:
    gw = run_gateway(gateway_settings(model_server, GATEWAY_MAX_IMAGE_PIXELS="10000000"))
    r = httpx.post(f"{gw.url}/v1/classify", **send(images.url))  # type: ignore[arg-type]
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_bad_images_in_a_batch_get_their_own_errors(gateway: RunningGateway, images: ImageHost) -> None:
    urls = [
        images.url("/red.jpg"),
        images.url("/notes.txt"),
        "http://10.0.0.1/x.jpg",
        images.url("/missing.jpg"),
        "ftp://x.test/a.jpg",
        images.url("/blue.png"),
    ]
    r = httpx.post(f"{gateway.url}/v1/classify/batch?top_k=2", json={"urls": urls})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert len(results) == len(urls)
    assert [set(x) for x in results] == [
        {"probabilities", "top"},
        {"error"},
        {"error"},
        {"error"},
        {"error"},
        {"probabilities", "top"},
    ]
    assert [x["error"]["code"] for x in results if "error" in x] == [
        "not_an_image",
        "url_not_allowed",
        "image_host_failed",
        "url_not_allowed",
    ]
    assert all(x["error"]["message"] for x in results if "error" in x)
    # The good images get the answers they get alone.
    for i in (0, 5):
        single = httpx.post(f"{gateway.url}/v1/classify", json={"url": urls[i]}).json()
        assert results[i]["probabilities"] == pytest.approx(single["probabilities"], rel=1e-5)
    assert body["model"]["signature"] == "pixels"
    # Uploads too: a text file among images is named in its slot.
    uploads = httpx.post(
        f"{gateway.url}/v1/classify/batch",
        files=[
            ("images", ("n.txt", b"just some text", "text/plain")),
            ("images", ("r.jpg", RED, "image/jpeg")),
            ("images", ("t.jpg", _truncated_jpeg(), "image/jpeg")),
        ],
    )
    assert uploads.status_code == 200, uploads.text
    codes = [x.get("error", {}).get("code") for x in uploads.json()["results"]]
    assert codes == ["not_an_image", None, "unreadable_image"]
    # Nothing good at all: every slot has its error, and the model is not asked.
    none = httpx.post(f"{gateway.url}/v1/classify/batch", json={"urls": [urls[1], urls[2]]})
    assert none.status_code == 200
    assert [x["error"]["code"] for x in none.json()["results"]] == ["not_an_image", "url_not_allowed"]


def test_the_course_call_and_a_single_image_still_fail_whole(
    gateway: RunningGateway, images: ImageHost
) -> None:
    r = httpx.post(f"{gateway.url}/predict", json={"url": images.url("/notes.txt")})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "not_an_image")
    r = httpx.post(f"{gateway.url}/v1/classify", json={"url": images.url("/missing.jpg")})
    assert (r.status_code, r.json()["error"]["code"]) == (502, "image_host_failed")


def test_an_unknown_model_is_503(
    run_gateway: RunGateway, model_server: LiveModelServer, images: ImageHost
) -> None:
    gw = run_gateway(gateway_settings(model_server, GATEWAY_MODEL_NAME="no-such-model"))
    r = httpx.post(f"{gw.url}/predict", json={"url": images.url("/red.jpg")})
    assert (r.status_code, r.json()["error"]["code"]) == (503, "model_unavailable")
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 503


def test_wrong_labels_are_reported_by_readiness(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    gw = run_gateway(gateway_settings(model_server, GATEWAY_LABELS="a,b,c"))
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 503
    assert "10 outputs but the gateway knows 3 labels" in ready.json()["reason"]


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_readiness_follows_the_model_server_without_a_restart(
    run_gateway: RunGateway, tmp_path: Path, images: ImageHost, model_server: LiveModelServer
) -> None:
    # Its own model server: stopping the shared one would disturb the other tests.
    own = LiveModelServer(model_server.model_dir)
    own.start()
    try:
        gw = run_gateway(gateway_settings(own))
        assert httpx.get(f"{gw.url}/readyz").json()["ready"] is True
        own.stop()
        assert httpx.get(f"{gw.url}/readyz").status_code == 503
        r = httpx.post(f"{gw.url}/predict", json={"url": images.url("/red.jpg")})
        assert r.status_code == 503
        own.start()
        assert _wait_for(lambda: httpx.get(f"{gw.url}/readyz").status_code == 200, 60)
        r = httpx.post(f"{gw.url}/predict", json={"url": images.url("/red.jpg")})
        assert r.status_code == 200
    finally:
        own.stop()


def test_metrics_show_each_stage_after_a_request(gateway: RunningGateway, images: ImageHost) -> None:
    httpx.post(f"{gateway.url}/predict", json={"url": images.url("/red.jpg")})
    text = httpx.get(f"{gateway.url}/metrics").text
    for stage in ("fetch", "decode", "preprocess", "predict"):
        assert f'gateway_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text
    # Labelled with the version TF Serving says answered (the demo model's only one).
    assert 'gateway_requests_total{model_version="1",route="/predict",status="200"} 1.0' in text
    assert "gateway_images_total 1.0" in text


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_base64_json_gets_the_same_answer_as_an_upload(gateway: RunningGateway, images: ImageHost) -> None:
    upload = httpx.post(
        f"{gateway.url}/v1/classify?logits=true", files={"image": ("red.jpg", RED, "image/jpeg")}
    ).json()
    url_safe = base64.urlsafe_b64encode(RED).decode().rstrip("=")
    spellings = (b64(RED), url_safe, base64.encodebytes(RED).decode())
    for text in spellings:
        r = httpx.post(f"{gateway.url}/v1/classify?logits=true", json={"b64": text})
        assert r.status_code == 200
        assert r.json()["logits"] == upload["logits"]
        assert r.json()["timings_ms"]["fetch"] == 0
    # The course's route takes it too, answering its own shape.
    r = httpx.post(f"{gateway.url}/predict", json={"b64": b64(RED)})
    assert r.json() == upload["logits"]


def test_a_batch_mixes_base64_and_urls(gateway: RunningGateway, images: ImageHost) -> None:
    forms = [{"b64": b64(BLUE)}, {"url": images.url("/red.jpg")}, {"b64": "@@"}, {"b64": b64(GREEN)}]
    body = {"images": forms}
    r = httpx.post(f"{gateway.url}/v1/classify/batch?logits=true", json=body)
    assert r.status_code == 200
    results = r.json()["results"]
    for image, result in zip((BLUE, RED, None, GREEN), results, strict=True):
        if image is None:
            assert result["error"]["code"] == "bad_request"
            assert result["error"]["message"].startswith("image 3 is not valid base64")
            continue
        single = httpx.post(
            f"{gateway.url}/v1/classify?logits=true", content=image, headers={"content-type": "image/*"}
        ).json()
        assert result["logits"] == single["logits"]


def test_base64_images_meet_the_byte_and_pixel_limits(
    run_gateway: RunGateway, model_server: LiveModelServer
) -> None:
    gw = run_gateway(
        gateway_settings(
            model_server, GATEWAY_MAX_IMAGE_BYTES=str(len(RED)), GATEWAY_MAX_IMAGE_PIXELS=str(640 * 480 - 1)
        )
    )
    # One byte over, whichever way it is spelled: refused, never classified.
    r = httpx.post(f"{gw.url}/v1/classify", json={"b64": b64(RED + b"\0")})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
    r = httpx.post(f"{gw.url}/v1/classify", json={"b64": b64(RED + b"\0" * 3000)})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
    assert "characters of base64" in r.json()["error"]["message"]
    # Within the byte limit, the pixel limit holds for what the base64 decodes to.
    r = httpx.post(f"{gw.url}/v1/classify", json={"b64": b64(RED)})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
    assert "pixels" in r.json()["error"]["message"]
    r = httpx.post(f"{gw.url}/v1/classify", json={"b64": b64(GREEN)})
    assert r.status_code == 200


def test_kserve_v2_health_metadata_and_json_infer(gateway: RunningGateway, images: ImageHost) -> None:
    assert httpx.get(f"{gateway.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{gateway.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}/ready").status_code == 200
    meta = httpx.get(f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}").json()
    assert meta["name"] == COURSE_MODEL_NAME
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "logits", "labels"]

    request = {
        "id": "r-1",
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(RED), b64(BLUE)]}],
    }
    r = httpx.post(f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}/infer", json=request)
    assert r.status_code == 200
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (COURSE_MODEL_NAME, "1", "r-1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["logits"]["shape"] == [2, 10]
    assert outputs["logits"]["datatype"] == "FP32"
    labels = {"name": "labels", "datatype": "BYTES", "shape": [10], "data": list(CLOTHING_LABELS)}
    assert outputs["labels"] == labels
    # The gateway's own route gives the same numbers, as float32.
    for i, image in enumerate((RED, BLUE)):
        own = httpx.post(f"{gateway.url}/v1/classify?logits=true", json={"b64": b64(image)}).json()
        row = outputs["logits"]["data"][i * 10 : (i + 1) * 10]
        own_row = np.array(list(own["logits"].values()), np.float32)
        assert np.array(row, np.float32).tolist() == own_row.tolist()
        probs = outputs["probabilities"]["data"][i * 10 : (i + 1) * 10]
        assert probs == pytest.approx(list(own["probabilities"].values()), rel=1e-6)


def test_kserve_v2_errors_are_its_own_shape(gateway: RunningGateway) -> None:
    url = f"{gateway.url}/v2/models/{COURSE_MODEL_NAME}/infer"

    def infer(data: list[str], **tensor: object) -> httpx.Response:
        spec = {"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data} | tensor
        return httpx.post(url, json={"inputs": [spec]})

    r = infer([b64(RED), "%%%"])
    assert r.status_code == 400
    assert r.json()["error"].startswith("image 2 is not valid base64")
    r = infer([b64(b"just some text")])
    assert (r.status_code, set(r.json())) == (415, {"error"})
    assert infer([b64(RED)], datatype="FP32").status_code == 400
    assert infer([b64(RED)], shape=[3]).status_code == 400
    r = httpx.post(f"{gateway.url}/v2/models/other/infer", json={"inputs": []})
    assert r.status_code == 404
    assert isinstance(r.json()["error"], str)
    assert httpx.get(f"{gateway.url}/v2/models/other").status_code == 404


def test_tf_serving_rest_predict_in_both_formats(gateway: RunningGateway) -> None:
    # The request shapes of TF Serving's REST API documentation, binary inputs as {"b64": …}.
    own = [
        httpx.post(f"{gateway.url}/v1/classify?logits=true", json={"b64": b64(image)}).json()
        for image in (RED, BLUE)
    ]
    url = f"{gateway.url}/v1/models/{COURSE_MODEL_NAME}:predict"
    for instances in (
        [{"b64": b64(RED)}, {"b64": b64(BLUE)}],
        [{"image_bytes": {"b64": b64(RED)}}, {"image_bytes": {"b64": b64(BLUE)}}],
    ):
        r = httpx.post(url, json={"instances": instances})
        assert r.status_code == 200
        predictions = r.json()["predictions"]
        assert len(predictions) == 2
        for prediction, mine in zip(predictions, own, strict=True):
            assert set(prediction) == {"scores", "classes", "logits"}
            assert prediction["classes"] == list(CLOTHING_LABELS)
            assert prediction["logits"] == list(mine["logits"].values())
            assert prediction["scores"] == list(mine["probabilities"].values())
    columns = [{"b64": b64(RED)}, {"b64": b64(BLUE)}]
    for inputs in (columns, {"image_bytes": columns}):
        r = httpx.post(url, json={"inputs": inputs})
        assert r.status_code == 200
        outputs = r.json()["outputs"]
        assert outputs["logits"] == [list(m["logits"].values()) for m in own]
        assert outputs["classes"] == [list(CLOTHING_LABELS)] * 2
    # The served version by number; the path with a colon is routed as TF Serving writes it.
    pinned = f"{gateway.url}/v1/models/{COURSE_MODEL_NAME}/versions/1:predict"
    r = httpx.post(pinned, json={"instances": [{"b64": b64(RED)}]})
    assert r.json()["predictions"][0]["logits"] == list(own[0]["logits"].values())


def test_tf_serving_rest_status_and_errors(gateway: RunningGateway) -> None:
    status = httpx.get(f"{gateway.url}/v1/models/{COURSE_MODEL_NAME}")
    assert status.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    url = f"{gateway.url}/v1/models/{COURSE_MODEL_NAME}:predict"
    model = f"{gateway.url}/v1/models/{COURSE_MODEL_NAME}"
    cases: list[tuple[str, object, int, str]] = [
        (url, {"instances": [{"b64": b64(RED)}, {"b64": "*"}]}, 400, "image 2 is not valid base64"),
        (url, {"instances": [{"b64": b64(b"just some text")}]}, 415, "not"),
        (url, {"instances": [{"url": "http://x.test/a.jpg"}]}, 400, '"instances" item 1'),
        (url, {"instances": [], "inputs": []}, 400, "instances"),
        (f"{gateway.url}/v1/models/other:predict", {"instances": [{"b64": b64(RED)}]}, 404, "no model named"),
        # As TF Serving: the body is read first, the version looked up when the call is made.
        (f"{model}/versions/7:predict", {"instances": [{"b64": b64(RED)}]}, 404, "versions available: 1"),
        (f"{model}/labels/stable:predict", {"instances": [{"b64": b64(RED)}]}, 404, "label 'stable'"),
    ]
    for path, body, status_code, words in cases:
        r = httpx.post(path, json=body)
        assert r.status_code == status_code, (path, body, r.text)
        assert set(r.json()) == {"error"}
        assert isinstance(r.json()["error"], str)
        assert words in r.json()["error"]
    assert httpx.get(f"{gateway.url}/v1/models/other").status_code == 404
