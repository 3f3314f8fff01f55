"""What a hostile or careless client meets at the gateway's edge, with no model server needed:
deep or huge JSON, a 405, refusals that name no internal address, readiness that names no TF
Serving address, an upload far over the byte limit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from gateway import Settings, parse_settings
from testing_support.in_process_gateway import RunningGateway, resolver_from
from testing_support.ports import closed_port_address

RunGateway = Callable[..., RunningGateway]
CLASSIFY_ROUTES = ["/predict", "/v1/classify", "/v1/classify/batch"]


def settings(**variables: str) -> Settings:
    """The gateway as configured by these environment variables."""
    return parse_settings([], {"TF_SERVING_HOST": closed_port_address()} | variables)


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["code"]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", CLASSIFY_ROUTES)
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"url": ' + b"[" * 1200 + b"]" * 1200 + b"}", "nested"),
        (b"[" * 100_000, "nested"),
        (b'{"url": "http://x.test/a.jpg", "n": ' + b"7" * 5000 + b"}", "digits"),
        (b'{"urls": [' + b"-" + b"9" * 4301 + b"]}", "digits"),
    ],
    ids=["deep-1200", "deep-100k-unclosed", "int-5000-digits", "negative-int-4302-digits"],
)
def test_deep_or_huge_json_is_a_400_without_a_traceback(
    run_gateway: RunGateway, caplog: pytest.LogCaptureFixture, path: str, body: bytes, words: str
) -> None:
    gw = run_gateway(settings())
    with caplog.at_level(logging.INFO):
        r = httpx.post(f"{gw.url}{path}", content=body, headers={"content-type": "application/json"})
    assert error_of(r) == (400, "bad_request")
    assert words in r.json()["error"]["message"]
    assert tracebacks(caplog) == []


def test_json_within_the_bounds_is_still_read(run_gateway: RunGateway) -> None:
    # 30 levels and a 100-digit number are parsed (and then refused for what they say, not how).
    gw = run_gateway(settings())
    deep = b'{"url": "ftp://x.test/a.jpg", "x": ' + b"[" * 30 + b"1" * 100 + b"]" * 30 + b"}"
    r = httpx.post(f"{gw.url}/predict", content=deep, headers={"content-type": "application/json"})
    assert error_of(r) == (400, "url_not_allowed")


def test_wrong_method_is_405_with_allow(run_gateway: RunGateway) -> None:
    gw = run_gateway(settings())
    r = httpx.get(f"{gw.url}/predict")
    assert error_of(r) == (405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = httpx.post(f"{gw.url}/healthz")
    assert error_of(r) == (405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_a_refused_name_does_not_say_where_it_points(
    run_gateway: RunGateway, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = resolver_from({"sneaky.test": ["127.0.0.1"], "kubernetes.default.svc": ["10.96.0.1"]})
    gw = run_gateway(settings(), resolver)
    with caplog.at_level(logging.INFO, logger="gateway"):
        for url in ("http://sneaky.test/a.jpg", "http://kubernetes.default.svc/"):
            for path, body in (
                ("/predict", {"url": url}),
                ("/v1/classify", {"url": url}),
                ("/v1/classify/batch", {"urls": [url]}),
            ):
                r = httpx.post(f"{gw.url}{path}", json=body)
                error = r.json()["results"][0] if path.endswith("batch") else r.json()
                assert error["error"] == {
                    "code": "url_not_allowed",
                    "message": "the image host resolves to a private, loopback or reserved address",
                }, r.text
                assert "127.0.0.1" not in r.text
                assert "10.96.0.1" not in r.text
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    # The gateway's log keeps what the client is not told.
    assert "sneaky.test resolves to 127.0.0.1, a loopback address" in logged
    assert "kubernetes.default.svc resolves to 10.96.0.1, a private address" in logged


def test_readiness_and_unavailable_answers_do_not_publish_the_tf_serving_address(
    run_gateway: RunGateway, caplog: pytest.LogCaptureFixture
) -> None:
    address = closed_port_address()
    port = address.rsplit(":", 1)[1]
    gw = run_gateway(settings(TF_SERVING_HOST=address), resolver_from({}))
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 503
    assert set(ready.json()) == {"ready", "reason", "model", "versions", "checked_in_ms"}
    assert port not in ready.json()["reason"]
    with caplog.at_level(logging.INFO, logger="gateway"):
        r = httpx.post(f"{gw.url}/v1/classify", content=b"\x89PNG", headers={"content-type": "image/png"})
    assert error_of(r) == (503, "model_unavailable")
    assert port not in r.text
    assert any(port in rec.getMessage() for rec in caplog.records), "the address belongs in the log"


@pytest.mark.parametrize("path", ["/v1/classify", "/v1/classify/batch"])
def test_an_upload_far_over_the_limit_is_refused_while_it_arrives(run_gateway: RunGateway, path: str) -> None:
    # 2 MB allowed per image; the client sends a 300 MB file in a form without Content-Length
    # (chunked), so nothing but the bytes themselves can stop it. The gateway must answer 413 and
    # stop reading after about the limit, not take in the whole body first.
    limit = 2 * 1024 * 1024
    total = 300 * 1024 * 1024
    # A batch of 160 such images would be 320 MiB: the whole body is within the request's limit,
    # so only the per-file limit, counted while the file arrives, can stop it.
    gw = run_gateway(settings(GATEWAY_MAX_BATCH="160", GATEWAY_MAX_IMAGE_BYTES=str(limit)))
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    boundary = "b0undary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"big.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    frame = b"%x\r\n%s\r\n" % (256 * 1024, b"\xff" * (256 * 1024))
    pending = memoryview(frame)
    sent = 0
    answer = b""
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sock.setblocking(False)
        while sent < total and b"\r\n\r\n" not in answer:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            try:
                n = sock.send(pending)
                sent += n
                pending = pending[n:] if n < len(pending) else memoryview(frame)
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
            assert time.monotonic() - started < 60, f"no answer after {sent} bytes"
        # Bounded: a gateway still waiting for the rest of the body must not hang the test.
        sock.settimeout(10)
        try:
            while b'"too_large"' not in answer and (more := sock.recv(65536)):
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"too_large"' in answer
    # The kernel's socket buffers hold a few MB on loopback; the rest was never sent.
    assert sent < 10 * limit, f"{sent / 2**20:.0f} MiB sent before the 413"


def test_the_schema_states_the_bounds_the_server_enforces(run_gateway: RunGateway) -> None:
    # Each bound the schema documents: the server refuses one past it and takes the bound itself
    # (it then goes on to the next step, which fails here for other reasons: no model server).
    gw = run_gateway(settings(GATEWAY_MAX_BATCH="4"))
    schema = httpx.get(f"{gw.url}/openapi.json").json()
    top_k = next(p for p in schema["paths"]["/v1/classify"]["post"]["parameters"] if p["name"] == "top_k")
    by_urls, by_images = schema["components"]["schemas"]["BatchRequest"]["oneOf"]
    urls, images = by_urls["properties"]["urls"], by_images["properties"]["images"]
    assert (top_k["schema"]["minimum"], top_k["schema"]["maximum"]) == (1, 1000)
    assert (urls["minItems"], urls["maxItems"]) == (1, 4)
    assert (images["minItems"], images["maxItems"]) == (1, 4)

    def code(path: str, **kwargs: object) -> str:
        return str(httpx.post(f"{gw.url}{path}", **kwargs).json()["error"]["code"])  # type: ignore[arg-type]

    image = {"content": b"\x89PNG", "headers": {"content-type": "image/png"}}
    assert code("/v1/classify?top_k=0", **image) == "bad_request"
    assert code("/v1/classify?top_k=1001", **image) == "bad_request"
    assert code("/v1/classify?top_k=1000", **image) == "model_unavailable"
    assert code("/v1/classify?top_k=1", **image) == "model_unavailable"
    assert code("/v1/classify/batch", json={"urls": []}) == "bad_request"
    assert code("/v1/classify/batch", json={"urls": ["ftp://x.test/a"] * 5}) == "bad_request"
    assert code("/v1/classify/batch", json={"images": [{"b64": "QUJD"}] * 5}) == "bad_request"
    r = httpx.post(f"{gw.url}/v1/classify/batch", json={"urls": ["ftp://x.test/a"] * 4})
    assert r.status_code == 200
    assert [x["error"]["code"] for x in r.json()["results"]] == ["url_not_allowed"] * 4
    # Every error code the gateway can answer is in the schema's list, and nothing else.
    from gateway.openapi import error_codes

    listed = schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert listed == error_codes()
    assert {"client_disconnected", "method_not_allowed", "internal"} <= set(listed)
