"""A real Prometheus (Debian's) on loopback scrapes the running local stack with the bundle's rules;
after a short bounded load, every recording rule and every dashboard query returns data, and the
counts Prometheus holds are the answers the load got."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

# The TensorFlow resolve has PyYAML without its stubs (types-PyYAML is in python-default only).
import yaml  # type: ignore[import-untyped, unused-ignore]
from monitoring_checks.bundle import (
    MONITORING_DIR,
    RULES_FILE,
    alert_names,
    panels,
    prometheus_tools,
    recording_rules,
)

from clothing_preproc.signature import COURSE_MODEL_NAME
from deploy_checks.testlib import DEPLOY_DIR
from reliability.images import sample_jpeg
from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess, child_environment
from testing_support.stack import (
    Gateway,
    ModelServer,
    export_demo_model,
    logs_dir,
    start_gateway,
    start_model_server,
)

# The model image's own file (deploy/images/model): the cluster's TF Serving reads the same one.
MONITORING_CONFIG = DEPLOY_DIR / "images" / "model" / "monitoring.config"
EXAMPLE_CONFIG = MONITORING_DIR / "prometheus-local.yml"

# The load: bounded, loopback only. A steady part paced over several scrapes (a counter that
# appears and stops within one scrape shows no rate), with no more clients than the gateway
# admits; then two bursts, a few scrapes apart, of more requests at once than it admits (429s).
IMAGES = 240
BAD_URLS = 12
NOT_IMAGES = 12
STEADY_CLIENTS = 4
STEADY_SECONDS = 8.0
BURST = 16
BURSTS = 2
GATEWAY_SETTINGS = {"GATEWAY_MAX_CONCURRENCY": str(STEADY_CLIENTS)}

@dataclass
class Monitored:
    server: ModelServer
    gateway: Gateway
    prometheus: str  # its HTTP API's base URL
    tally: Counter[tuple[str, int]]  # (route, status) -> answers the load got

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10.0)
        body = answer.json()
        assert answer.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def eventually(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The query's result once it has one (rules are evaluated every second)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(expr)) and time.monotonic() < deadline:
            time.sleep(0.5)
        return result


def _prometheus_config(gateway: Gateway, server: ModelServer) -> dict[str, Any]:
    """The bundle's example config for the local stack, pointed at this stack's ports and sped up."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES_FILE)]
    addresses = {"gateway": f"{LOOPBACK}:{gateway.port}", "tf-serving": f"{LOOPBACK}:{server.rest_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [addresses[job["job_name"]]]}]
    return config


def _load(gateway: Gateway) -> Counter[tuple[str, int]]:
    image = {"content": sample_jpeg(160, 120), "headers": {"content-type": "image/jpeg"}}
    classify = ("/v1/classify", image)
    bad_url = ("/predict", {"json": {"url": "ftp://images.test/a.jpg"}})
    not_image = ("/v1/classify", {"content": b"not an image", "headers": {"content-type": "image/jpeg"}})
    steady: list[tuple[str, dict[str, Any]]] = [classify] * IMAGES
    # The refusals spread through the steady part, so their counters grow over several scrapes too.
    for n, call in enumerate([bad_url] * BAD_URLS + [not_image] * NOT_IMAGES):
        steady.insert((n * 2 + 1) * len(steady) // ((BAD_URLS + NOT_IMAGES) * 2), call)
    tally: Counter[tuple[str, int]] = Counter()
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        started = time.monotonic()
        interval = STEADY_SECONDS / len(steady)

        def paced(numbered: tuple[int, tuple[str, dict[str, Any]]]) -> tuple[str, int]:
            n, (route, args) = numbered
            time.sleep(max(0.0, started + n * interval - time.monotonic()))
            return route, client.post(route, **args).status_code

        with ThreadPoolExecutor(STEADY_CLIENTS) as pool:
            tally.update(pool.map(paced, enumerate(steady)))
        for _ in range(BURSTS):
            tally.update(_burst(client, classify, BURST))
            time.sleep(2.5)  # two scrapes between the bursts
    return tally


def _burst(client: httpx.Client, call: tuple[str, dict[str, Any]], size: int) -> list[tuple[str, int]]:
    """`size` requests sent at the same moment, each from its own thread."""
    route, args = call
    together = threading.Barrier(size)

    def one(_: int) -> tuple[str, int]:
        together.wait()
        return route, client.post(route, **args).status_code

    with ThreadPoolExecutor(size) as pool:
        return list(pool.map(one, range(size)))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    prometheus, _ = prometheus_tools()
    workdir = tmp_path_factory.mktemp("monitored")
    logs = logs_dir(workdir)
    model = export_demo_model(workdir, "tiny")
    server = start_model_server(model, logs, extra_args=(f"--monitoring_config_file={MONITORING_CONFIG}",))
    started: list[RunningProcess] = [server.process]
    try:
        gateway = start_gateway(server.grpc_address, logs, GATEWAY_SETTINGS)
        started.append(gateway.process)
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(_prometheus_config(gateway, server)))
        port = free_port()
        process = RunningProcess(
            "prometheus",
            [
                str(prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{port}",
            ],
            child_environment(),
            logs / "prometheus.log",
        )
        started.append(process)
        url = f"http://{LOOPBACK}:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False

        process.wait_until(ready, 60.0, "ready")
        stack = Monitored(server, gateway, url, Counter())
        # Both targets scraped once before the load, so every counter has a starting point.
        assert stack.eventually('count(up{job=~"gateway|tf-serving"} == 1) == 2'), "targets never came up"
        stack.tally = _load(gateway)
        yield stack
    finally:
        for child in reversed(started):
            child.stop()


def test_prometheus_holds_exactly_the_answers_the_load_got(monitored: Monitored) -> None:
    sent = sum(monitored.tally.values())
    expr = 'sum(gateway_requests_total{route=~"/v1/classify|/predict"})'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = monitored.query(expr)
        if result and float(result[0]["value"][1]) >= sent:
            break
        time.sleep(0.5)
    by_status = monitored.query(
        'sum by (route, status) (gateway_requests_total{route=~"/v1/classify|/predict"})'
    )
    scraped = {(r["metric"]["route"], int(r["metric"]["status"])): float(r["value"][1]) for r in by_status}
    assert scraped == {key: float(n) for key, n in monitored.tally.items()}
    # The steady part never had more requests in flight than the gateway admits.
    assert monitored.tally[("/predict", 400)] == BAD_URLS
    assert monitored.tally[("/v1/classify", 200)] >= IMAGES
    # Every status the load got has its share in the by-status rule (429 among them if the
    # bursts met a full gateway).
    shares = monitored.eventually("gateway:requests_by_status:ratio_rate5m")
    assert {r["metric"]["status"] for r in shares} == {str(status) for _, status in monitored.tally}


def test_answers_carry_the_model_version_that_served_them(monitored: Monitored) -> None:
    served = monitored.query(
        'sum by (model_version) (gateway_requests_total{route="/v1/classify",status="200"})'
    )
    assert {r["metric"]["model_version"] for r in served} == {"1"}  # the demo export's version
    assert float(served[0]["value"][1]) == monitored.tally[("/v1/classify", 200)]
    # Refused and failed requests reached no model: no version.
    refused = monitored.query('sum(gateway_requests_total{route="/predict",status="400",model_version=""})')
    assert float(refused[0]["value"][1]) == BAD_URLS


def test_tf_serving_metrics_are_scraped_with_tf_servings_names_and_units(monitored: Monitored) -> None:
    ok = monitored.query(f':tensorflow:serving:request_count{{model_name="{COURSE_MODEL_NAME}",status="OK"}}')
    # One Predict per classified image: the gateway sends one image per request here.
    assert float(ok[0]["value"][1]) == monitored.tally[("/v1/classify", 200)]
    p99 = monitored.eventually('tfserving:request_latency_seconds:p99_rate5m{API="Predict"}')
    assert p99, "no TF Serving latency recorded"
    # Seconds, after the rule's conversion from TF Serving's microseconds: the tiny model answers
    # in milliseconds, so anything near or over a second means a unit went wrong.
    assert 0 < float(p99[0]["value"][1]) < 1.0


def test_every_recording_rule_returns_data(monitored: Monitored) -> None:
    empty = [rule for rule in recording_rules() if not monitored.eventually(rule)]
    assert not empty, f"recording rules without data: {empty}"


def test_every_dashboard_query_returns_data(monitored: Monitored) -> None:
    empty = [
        f"{panel.title}: {expr}"
        for panel in panels()
        for expr in panel.exprs
        if not monitored.eventually(expr)
    ]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_stack_reads_healthy(monitored: Monitored) -> None:
    ready = monitored.eventually("gateway_model_ready")
    assert [float(r["value"][1]) for r in ready] == [1.0]
    versions = monitored.query("gateway_model_version_available")
    assert [r["metric"]["model_version"] for r in versions] == ["1"]
    assert monitored.query('gateway:request_errors:ratio_rate5m')[0]["value"][1] == "0"


def test_every_rule_evaluates_without_error(monitored: Monitored) -> None:
    groups = httpx.get(f"{monitored.prometheus}/api/v1/rules", timeout=10.0).json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == set(recording_rules()) | set(alert_names())
    broken = {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    assert not broken
    # The load had 4xx answers and no 5xx, the model stayed AVAILABLE, both targets up and fast:
    # every alert but the 429 one (which the load may provoke on purpose) stays inactive, not
    # even pending, so none of their expressions mistakes this traffic for trouble.
    pending = {
        name: rule["state"]
        for name, rule in loaded.items()
        if rule["type"] == "alerting" and name != "GatewayRejectingRequests" and rule["state"] != "inactive"
    }
    assert not pending
