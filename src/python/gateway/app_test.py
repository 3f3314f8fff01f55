"""The app under uvicorn with TF Serving down or stuck: everything a user sees before a model answers.

(The answers of a real model server are in api_test.py.)
"""

from __future__ import annotations

import base64
import re
import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from gateway import Settings, errors, parse_settings
from gateway.base64_images import text_limit
from gateway.errors import GatewayError
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.ports import closed_port_address

RunGateway = Callable[..., RunningGateway]


def settings(**variables: str) -> Settings:
    """The gateway as configured by these environment variables, its images served on loopback."""
    environ = {"TF_SERVING_HOST": closed_port_address(), "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8"}
    return parse_settings([], environ | variables)


@pytest.fixture()
def black_hole() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers (a hung TF Serving)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["code"]


def test_liveness_and_readiness_without_tf_serving(run_gateway: RunGateway) -> None:
    gw = run_gateway(settings())
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert "unavailable" in ready.json()["reason"]


def test_tf_serving_down_is_503_with_retry_after(run_gateway: RunGateway, image_host: ImageHost) -> None:
    image_host.routes["/shirt.jpg"] = Reply(200, image_bytes())
    gw = run_gateway(settings())
    r = httpx.post(f"{gw.url}/predict", json={"url": image_host.url("/shirt.jpg")})
    assert error_of(r) == (503, "model_unavailable")
    assert r.headers["retry-after"] == "5"


def test_a_hung_tf_serving_is_504_after_the_deadline(
    run_gateway: RunGateway, image_host: ImageHost, black_hole: str
) -> None:
    image_host.routes["/shirt.jpg"] = Reply(200, image_bytes())
    gw = run_gateway(settings(TF_SERVING_HOST=black_hole, GATEWAY_PREDICT_TIMEOUT="1"))
    r = httpx.post(f"{gw.url}/predict", json={"url": image_host.url("/shirt.jpg")}, timeout=30)
    assert error_of(r) == (504, "deadline_exceeded")


def test_the_concurrency_limit_answers_429_at_once(run_gateway: RunGateway, image_host: ImageHost) -> None:
    release = threading.Event()
    image_host.routes["/slow.jpg"] = Reply(200, image_bytes(), hold=release)
    gw = run_gateway(settings(GATEWAY_MAX_CONCURRENCY="1"))
    first: list[httpx.Response] = []
    holder = threading.Thread(
        target=lambda: first.append(
            httpx.post(f"{gw.url}/predict", json={"url": image_host.url("/slow.jpg")})
        )
    )
    holder.start()
    try:
        # Wait until the first request is inside the gateway (its fetch reached the image host).
        for _ in range(500):
            if image_host.hits:
                break
            threading.Event().wait(0.01)
        r = httpx.post(f"{gw.url}/predict", json={"url": image_host.url("/slow.jpg")})
        assert error_of(r) == (429, "overloaded")
        assert r.headers["retry-after"] == "1"
    finally:
        release.set()
        holder.join(30)
    # The first request went on (and failed only because no TF Serving runs here).
    assert error_of(first[0]) == (503, "model_unavailable")


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        (
            "/predict",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "bad_request",
        ),
        ("/predict", {"json": {"image": "x"}}, 400, "bad_request"),
        ("/predict", {"json": {"url": 42}}, 400, "bad_request"),
        ("/predict", {"json": {"url": "file:///etc/passwd"}}, 400, "url_not_allowed"),
        ("/predict", {"json": {"url": "http://169.254.169.254/latest/meta-data/"}}, 400, "url_not_allowed"),
        (
            "/v1/classify",
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            400,
            "bad_request",
        ),
        ("/v1/classify?top_k=zero", {"json": {"url": "http://x.test/a.jpg"}}, 400, "bad_request"),
        ("/v1/classify?logits=maybe", {"json": {"url": "http://x.test/a.jpg"}}, 400, "bad_request"),
        ("/v1/classify/batch", {"json": {"urls": "http://x.test/a.jpg"}}, 400, "bad_request"),
        ("/v1/classify/batch", {"json": {"urls": []}}, 400, "bad_request"),
        ("/v1/classify/batch", {"json": {"urls": ["http://x.test/a.jpg"] * 17}}, 400, "bad_request"),
        (
            "/v1/classify",
            {"content": b"x" * 2000, "headers": {"content-type": "image/jpeg"}},
            413,
            "too_large",
        ),
        ("/nowhere", {"json": {}}, 404, "not_found"),
    ],
)
def test_bad_requests_get_a_clear_error(
    run_gateway: RunGateway, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    gw = run_gateway(settings(GATEWAY_MAX_IMAGE_BYTES="1000"))
    r = httpx.post(f"{gw.url}{path}", **kwargs)  # type: ignore[arg-type]
    assert error_of(r) == (status, code)
    assert r.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_is_cut_off(run_gateway: RunGateway) -> None:
    gw = run_gateway(settings(GATEWAY_MAX_BATCH="1", GATEWAY_MAX_IMAGE_BYTES="1000"))

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"\0" * 65536

    r = httpx.post(f"{gw.url}/v1/classify", content=chunks(), headers={"content-type": "image/png"})
    assert error_of(r) == (413, "too_large")


@pytest.mark.parametrize("path", ["/predict", "/v1/classify", "/v1/classify/batch"])
def test_a_json_body_is_refused_at_its_own_limit_before_it_arrives(
    run_gateway: RunGateway, path: str
) -> None:
    # A JSON body may carry every image as base64 (a full batch: hundreds of MB by default). One
    # declaring more must be refused from its headers, not buffered or waited for: the client here
    # sends only its first bytes and then waits for the answer.
    gw = run_gateway(settings())
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000000000\r\n\r\n{{\"url\": \"".encode()
        )
        answer = b""
        while b'"too_large"' not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"too_large"' in answer


def test_wrong_method_is_405_in_the_same_shape(run_gateway: RunGateway) -> None:
    gw = run_gateway(settings())
    assert error_of(httpx.get(f"{gw.url}/predict")) == (405, "method_not_allowed")


def test_the_openapi_schema_documents_every_route_and_error_code(run_gateway: RunGateway) -> None:
    gw = run_gateway(settings())
    schema = httpx.get(f"{gw.url}/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    app_paths = {"/", "/static/{name}", "/predict", "/v1/classify", "/v1/classify/batch"}
    app_paths |= {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    app_paths |= {"/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready"}
    app_paths |= {"/v2/models/{name}/infer"}
    app_paths |= {f"/v2/models/{{name}}/versions/{{version}}{s}" for s in ("", "/ready", "/infer")}
    app_paths |= {"/v1/models/{name}:predict", "/v1/models/{name}/versions/{version}:predict"}
    app_paths |= {"/v1/models/{name}/labels/{label}:predict", "/v1/models/{name}"}
    pinned = ("", "/versions/{version}", "/labels/{label}")
    app_paths |= {f"/v1/models/{{name}}{p}{s}" for p in pinned for s in ("", "/metadata")}
    assert set(schema["paths"]) == app_paths
    codes = set(schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    for cls in _all_subclasses(GatewayError):
        assert errors.describe(cls("x")).code in codes
    assert {"not_an_image", "unreadable_image", "internal"} <= codes
    # The base64 bound is the one the decoder enforces, from the same byte limit.
    b64 = schema["components"]["schemas"]["Base64Request"]["properties"]["b64"]
    assert b64["maxLength"] == text_limit(Settings().serving.limits.max_bytes)
    assert str(Settings().serving.limits.max_bytes) in b64["description"]


def _all_subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


def test_the_page_is_self_contained(run_gateway: RunGateway) -> None:
    gw = run_gateway(settings())
    page = httpx.get(f"{gw.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    html = page.text
    assert '<meta name="viewport"' in html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs
    assert all(ref.startswith("/") for ref in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            asset = httpx.get(f"{gw.url}{ref}")
            assert asset.status_code == 200
            assert "http://" not in asset.text
            assert "https://" not in asset.text
    assert error_of(httpx.get(f"{gw.url}/static/secret.txt")) == (404, "not_found")


def test_metrics_count_requests_errors_and_stages(run_gateway: RunGateway, image_host: ImageHost) -> None:
    image_host.routes["/shirt.jpg"] = Reply(200, image_bytes())
    gw = run_gateway(settings())
    httpx.post(f"{gw.url}/predict", json={"url": image_host.url("/shirt.jpg")})
    httpx.post(f"{gw.url}/predict", json={"url": "ftp://x.test/a.jpg"})
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'gateway_requests_total{model_version="",route="/predict",status="503"} 1.0' in text
    assert 'gateway_requests_total{model_version="",route="/predict",status="400"} 1.0' in text
    assert 'gateway_errors_total{code="model_unavailable"} 1.0' in text
    assert 'gateway_errors_total{code="url_not_allowed"} 1.0' in text
    for stage in ("fetch", "decode", "preprocess", "predict"):
        assert f'gateway_stage_duration_seconds_count{{stage="{stage}"}}' in text


def test_base64_images_are_bounded_and_checked_before_the_model_is_asked(run_gateway: RunGateway) -> None:
    # TF Serving is down here: every answer below comes from decoding the base64 alone.
    gw = run_gateway(settings(GATEWAY_MAX_IMAGE_BYTES="1000"))
    for path in ("/predict", "/v1/classify"):
        r = httpx.post(f"{gw.url}{path}", json={"b64": "not base64!"})
        assert error_of(r) == (400, "bad_request")
        assert r.json()["error"]["message"].startswith("the image is not valid base64")
        r = httpx.post(f"{gw.url}{path}", json={"b64": base64.b64encode(b"\xff" * 1001).decode()})
        assert error_of(r) == (413, "too_large")
        r = httpx.post(f"{gw.url}{path}", json={"b64": "QUJD", "url": "http://x.test/a.jpg"})
        assert error_of(r) == (400, "bad_request")
    # In a batch each image's error stands in its slot, naming the image.
    r = httpx.post(
        f"{gw.url}/v1/classify/batch",
        json={
            "images": [
                {"url": "http://10.0.0.1/a.jpg"},
                {"b64": "####"},
                {"b64": "A" * 2000},
            ]
        },
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["error"]["code"] for x in results] == ["url_not_allowed", "bad_request", "too_large"]
    assert results[1]["error"]["message"].startswith("image 2 is not valid base64")
    assert results[2]["error"]["message"].startswith("image 3 is")
    # A malformed item spoils the request, as a string that is no URL does.
    malformed = (
        ({"b64": 7}, '"images" item 1'),
        ({"b64": " "}, '"images" item 1: "b64" is empty'),
        ("x", '"images" item 1'),
        ({"url": "nope"}, "item 1"),
    )
    for item, words in malformed:
        r = httpx.post(f"{gw.url}/v1/classify/batch", json={"images": [item]})
        assert error_of(r) == (400, "bad_request")
        assert words in r.json()["error"]["message"]
