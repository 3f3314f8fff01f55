"""Request ids: the client's X-Request-ID when sane, else a new one, on every answer and log line."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from gateway import Settings, create_app, parse_settings
from gateway.request_ids import MAX_LENGTH, current_request_id
from testing_support.image_host import image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.ports import closed_port_address, free_port
from testing_support.processes import RunningProcess, child_environment, python_module

RunGateway = Callable[..., RunningGateway]
_MADE = re.compile(r"[0-9a-f]{32}")


def settings() -> Settings:
    return parse_settings([], {"TF_SERVING_HOST": closed_port_address()})


def test_a_clients_id_comes_back_on_the_answer(run_gateway: RunGateway) -> None:
    gateway = run_gateway(settings())
    for given in ("3f2a9c1e-7b7d-4c55-9d8e-0c3b1a2f4e5d", "checkout:42/retry=1", "A" * MAX_LENGTH):
        answer = httpx.get(f"{gateway.url}/healthz", headers={"X-Request-ID": given})
        assert answer.status_code == 200
        assert answer.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "hostile",
    [
        "A" * (MAX_LENGTH + 1),  # too long for a log line
        "id with spaces",
        '"><script>alert(1)</script>',
        "id\tsplit",
        "-starts-with-a-dash",
        "",
    ],
)
def test_an_insane_id_is_replaced_by_a_new_one(run_gateway: RunGateway, hostile: str) -> None:
    gateway = run_gateway(settings())
    answer = httpx.get(f"{gateway.url}/healthz", headers={"X-Request-ID": hostile})
    assert _MADE.fullmatch(answer.headers["x-request-id"]), answer.headers["x-request-id"]


def test_non_ascii_bytes_are_never_echoed(run_gateway: RunGateway) -> None:
    gateway = run_gateway(settings())
    hostile = "caf\u00e9\u00ff".encode("latin-1")
    answer = httpx.get(f"{gateway.url}/healthz", headers=[(b"X-Request-ID", hostile)])
    assert _MADE.fullmatch(answer.headers["x-request-id"])


def test_every_request_without_an_id_gets_its_own_on_errors_too(run_gateway: RunGateway) -> None:
    gateway = run_gateway(settings())
    with httpx.Client(base_url=gateway.url) as client:
        answers = [
            client.get("/healthz"),
            client.get("/no/such/page"),  # 404 from the router
            client.post("/v1/classify", content=b"not json", headers={"Content-Type": "application/json"}),
            client.post("/predict", json={"url": "http://127.0.0.1:1/x.jpg"}),
            client.get("/readyz"),  # 503: TF Serving is down
        ]
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200, 404, 400, 400, 503], statuses
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert all(_MADE.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_an_unhandled_errors_500_carries_the_id() -> None:
    """The 500 of a bug is answered by Starlette's outermost middleware: the id is set outside it."""
    app = create_app(settings())
    seen: list[str] = []

    async def boom(request: Request) -> Response:
        seen.append(current_request_id())
        raise RuntimeError("a bug")

    app.add_route("/boom", boom)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get("/boom", headers={"X-Request-ID": "bug-report-1"})

    answer = asyncio.run(call())
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal"
    assert answer.headers["x-request-id"] == "bug-report-1"
    assert seen == ["bug-report-1"]
    assert current_request_id() == ""


def test_the_gateway_process_writes_the_id_in_its_log_lines(tmp_path: Path) -> None:
    """`python -m gateway`: the access line and the gateway's own warning of one request carry its id;
    a hostile id reaches neither the answer nor the log."""
    port = free_port()
    env = child_environment(
        {"TF_SERVING_HOST": closed_port_address(), "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port)}
    )
    log_path = tmp_path / "gateway.log"
    gateway = RunningProcess("gateway", python_module("gateway"), env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        gateway.wait_until(lambda: _answers(f"{url}/healthz"), 60, "the gateway")
        # TF Serving is down: a 503 whose detail (where TF Serving is) the gateway logs as a warning.
        answer = httpx.post(
            f"{url}/v1/classify",
            content=image_bytes("PNG"),
            headers={"Content-Type": "image/png", "X-Request-ID": "trace-me-7"},
            timeout=30,
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["x-request-id"] == "trace-me-7"
        hostile = httpx.get(f"{url}/healthz", headers=[(b"X-Request-ID", "evil\u00e9 id".encode("latin-1"))])
        made = hostile.headers["x-request-id"]
        assert _MADE.fullmatch(made)
    finally:
        gateway.stop()
    lines = log_path.read_text(errors="replace").splitlines()
    mine = [line for line in lines if "[trace-me-7]" in line]
    assert any('"POST /v1/classify HTTP/1.1" 503' in line for line in mine), lines
    assert any("WARNING" in line and "503" in line for line in mine), lines
    assert any(f"[{made}]" in line and "/healthz" in line for line in lines), lines
    assert not any("evil" in line for line in lines)
    # Lines written outside a request say so.
    assert any("[-]" in line and "Uvicorn running" in line for line in lines), lines


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
