"""`python -m gateway` as deployed: /metrics on a port of its own when GATEWAY_METRICS_PORT is set."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from testing_support.ports import closed_port_address, free_port
from testing_support.processes import RunningProcess, child_environment, python_module


def _gateway(tmp_path: Path, **variables: str) -> RunningProcess:
    env = child_environment(
        {"TF_SERVING_HOST": closed_port_address(), "GATEWAY_HOST": "127.0.0.1", **variables}
    )
    return RunningProcess("gateway", python_module("gateway"), env, tmp_path / "gateway.log")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_metrics_move_to_their_own_port(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    gateway = _gateway(tmp_path, GATEWAY_PORT=str(port), GATEWAY_METRICS_PORT=str(metrics_port))
    try:
        api, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
        gateway.wait_until(lambda: _answers(f"{api}/healthz"), 60, "the gateway's port")
        gateway.wait_until(lambda: _answers(f"{metrics}/metrics"), 10, "the metrics port")
        # The public port has no /metrics; the metrics port counts the public port's requests and
        # serves nothing else.
        assert httpx.get(f"{api}/metrics").status_code == 404
        page = httpx.get(f"{metrics}/metrics")
        assert page.headers["content-type"].startswith("text/plain")
        assert 'gateway_requests_total{model_version="",route="/healthz",status="200"}' in page.text
        assert httpx.get(f"{metrics}/healthz").status_code == 404
    finally:
        gateway.stop()


def test_without_a_metrics_port_metrics_stay_on_the_gateways_port(tmp_path: Path) -> None:
    port = free_port()
    gateway = _gateway(tmp_path, GATEWAY_PORT=str(port))
    try:
        gateway.wait_until(lambda: _answers(f"http://127.0.0.1:{port}/metrics"), 60, "/metrics")
    finally:
        gateway.stop()


def test_a_taken_metrics_port_stops_the_start_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        gateway = _gateway(tmp_path, GATEWAY_PORT=str(free_port()), GATEWAY_METRICS_PORT=str(metrics_port))
        assert gateway.wait(60) == 1
    log = (tmp_path / "gateway.log").read_text()
    assert f"gateway: GATEWAY_METRICS_PORT={metrics_port}: Address already in use" in log
    assert "Traceback" not in log
