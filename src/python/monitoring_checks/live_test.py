"""A real Prometheus (Debian's) on loopback scrapes the running local stack with the bundle's rules;
after a short bounded load, every recording rule and every dashboard query returns data, and the
counts Prometheus holds are the answers the load got.

The stack runs a canary rollout, as a cluster does during one: the model server serves two versions
labelled `stable` and `canary` from a TF Serving model config, and the gateway sends 10 % of the
requests to `canary`. The split's series (and the dashboard's canary panels) exist only then."""

from __future__ import annotations

import shutil
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
from gateway.versions import client_bucket
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
# The rollout: the demo export is version 1 (stable), a copy of it version 2 (canary).
STABLE_VERSION, CANARY_VERSION = 1, 2
CANARY_PERCENT = 10
CLIENT_ID_HEADER = "X-Client-ID"  # the gateway's default GATEWAY_CLIENT_ID_HEADER
GATEWAY_SETTINGS = {
    "GATEWAY_MAX_CONCURRENCY": str(STEADY_CLIENTS),
    "GATEWAY_CANARY_PERCENT": str(CANARY_PERCENT),
}


def split_label(client_id: str) -> str:
    """The side of the split the gateway sends this client's requests to (sticky per client id)."""
    return "canary" if client_bucket(client_id) < CANARY_PERCENT else "stable"


def rollout_config(base: str) -> str:
    """A TF Serving model config serving both versions, labelled as during a canary."""
    return (
        f"model_config_list {{ config {{ name: '{COURSE_MODEL_NAME}' base_path: '{base}' "
        "model_platform: 'tensorflow' "
        f"model_version_policy {{ specific {{ versions: {STABLE_VERSION} versions: {CANARY_VERSION} }} }} "
        f"version_labels {{ key: 'stable' value: {STABLE_VERSION} }} "
        f"version_labels {{ key: 'canary' value: {CANARY_VERSION} }} }} }}\n"
    )


@dataclass
class Monitored:
    server: ModelServer
    gateway: Gateway
    prometheus: str  # its HTTP API's base URL
    tally: Counter[tuple[str, int]]  # (route, status) -> answers the load got
    split: Counter[tuple[str, int]]  # (label, status) -> answers by the side of the split
    served: Counter[str]  # model version -> 200 answers it served (the answers' X-Model-Version)
    last_canary_at: float = 0.0  # time.time() when the last request, a canary's, was answered

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10.0)
        body = answer.json()
        assert answer.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_at(self, expr: str, at: float) -> float:
        """The single value of `expr` evaluated at time `at` (seconds since the epoch)."""
        answer = httpx.get(
            f"{self.prometheus}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"}, timeout=10.0
        )
        (sample,) = answer.json()["data"]["result"]
        return float(sample["value"][1])

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


@dataclass(frozen=True)
class Answer:
    route: str
    status: int
    label: str  # the side of the split its client id falls on
    version: str  # X-Model-Version ("" when no model answered)


def _send(client: httpx.Client, client_id: str, route: str, args: dict[str, Any]) -> Answer:
    headers = {**args.get("headers", {}), CLIENT_ID_HEADER: client_id}
    answer = client.post(route, **{**args, "headers": headers})
    version = answer.headers.get("x-model-version", "")
    return Answer(route, answer.status_code, split_label(client_id), version)


def _load(gateway: Gateway) -> list[Answer]:
    """The load; request n comes from client `client-n`, so the split applies as to many users."""
    image = {"content": sample_jpeg(160, 120), "headers": {"content-type": "image/jpeg"}}
    classify = ("/v1/classify", image)
    bad_url = ("/predict", {"json": {"url": "ftp://images.test/a.jpg"}})
    not_image = ("/v1/classify", {"content": b"not an image", "headers": {"content-type": "image/jpeg"}})
    steady: list[tuple[str, dict[str, Any]]] = [classify] * IMAGES
    # The refusals spread through the steady part, so their counters grow over several scrapes too.
    for n, call in enumerate([bad_url] * BAD_URLS + [not_image] * NOT_IMAGES):
        steady.insert((n * 2 + 1) * len(steady) // ((BAD_URLS + NOT_IMAGES) * 2), call)
    answers: list[Answer] = []
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        started = time.monotonic()
        interval = STEADY_SECONDS / len(steady)

        def paced(numbered: tuple[int, tuple[str, dict[str, Any]]]) -> Answer:
            n, (route, args) = numbered
            time.sleep(max(0.0, started + n * interval - time.monotonic()))
            return _send(client, f"client-{n}", route, args)

        with ThreadPoolExecutor(STEADY_CLIENTS) as pool:
            answers.extend(pool.map(paced, enumerate(steady)))
        for _ in range(BURSTS):
            answers.extend(_burst(client, classify, BURST, first=len(answers)))
            time.sleep(2.5)  # two scrapes between the bursts
    return answers


def _burst(client: httpx.Client, call: tuple[str, dict[str, Any]], size: int, first: int) -> list[Answer]:
    """`size` requests sent at the same moment, each from its own thread (clients `first`...)."""
    route, args = call
    together = threading.Barrier(size)

    def one(n: int) -> Answer:
        together.wait()
        return _send(client, f"client-{first + n}", route, args)

    with ThreadPoolExecutor(size) as pool:
        return list(pool.map(one, range(size)))


def _canary_client() -> str:
    """A client id the split sends to the canary."""
    return next(f"canary-{n}" for n in range(10_000) if split_label(f"canary-{n}") == "canary")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    prometheus, _ = prometheus_tools()
    workdir = tmp_path_factory.mktemp("monitored")
    logs = logs_dir(workdir)
    model = export_demo_model(workdir, "tiny")
    shutil.copytree(model.base / str(STABLE_VERSION), model.base / str(CANARY_VERSION))
    models_config = workdir / "models.config"
    models_config.write_text(rollout_config(str(model.base)), encoding="utf-8")
    server = start_model_server(
        model,
        logs,
        extra_args=(
            f"--monitoring_config_file={MONITORING_CONFIG}",
            f"--model_config_file={models_config}",
            # The labels name versions that load after the config is read.
            "--allow_version_labels_for_unavailable_models",
        ),
    )
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
        stack = Monitored(server, gateway, url, Counter(), Counter(), Counter())
        # Both targets scraped once before the load, so every counter has a starting point.
        assert stack.eventually('count(up{job=~"gateway|tf-serving"} == 1) == 2'), "targets never came up"
        answers = _load(gateway)
        # Last, one canary request whose first scrape after it the tests look at.
        with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
            image = {"content": sample_jpeg(160, 120), "headers": {"content-type": "image/jpeg"}}
            answers.append(_send(client, _canary_client(), "/v1/classify", image))
            stack.last_canary_at = time.time()
        stack.tally = Counter((a.route, a.status) for a in answers)
        stack.split = Counter((a.label, a.status) for a in answers)
        stack.served = Counter(a.version for a in answers if a.status == 200)
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
        'sum by (model_version) (gateway_requests_total{route=~"/v1/classify|/predict",status="200"})'
    )
    scraped = {r["metric"]["model_version"]: float(r["value"][1]) for r in served}
    # Both versions served: the split's stable side version 1, its canary side version 2.
    assert scraped == {version: float(n) for version, n in monitored.served.items()}
    assert set(scraped) == {str(STABLE_VERSION), str(CANARY_VERSION)}
    assert monitored.served[str(CANARY_VERSION)] == monitored.split[("canary", 200)]
    # Refused and failed requests reached no model: no version.
    refused = monitored.query('sum(gateway_requests_total{route="/predict",status="400",model_version=""})')
    assert float(refused[0]["value"][1]) == BAD_URLS


def test_the_split_is_counted_per_label_with_every_status(monitored: Monitored) -> None:
    result = monitored.query("sum by (label, status) (gateway_rollout_requests_total)")
    scraped = {(r["metric"]["label"], int(r["metric"]["status"])): float(r["value"][1]) for r in result}
    # Every request pinned nothing, so every answer, refusals included, counts under its side.
    expected = {key: float(n) for key, n in monitored.split.items()}
    expected.setdefault(("canary", 200), 0.0)  # both sides are there from the first scrape
    assert scraped == expected
    canary = sum(n for (label, _), n in monitored.split.items() if label == "canary")
    assert 0.05 < canary / sum(monitored.split.values()) < 0.15  # GATEWAY_CANARY_PERCENT=10
    rates = monitored.eventually("sum by (label) (gateway_rollout:requests:rate5m) > 0")
    assert {r["metric"]["label"] for r in rates} == {"stable", "canary"}


def test_a_canary_answer_is_in_the_first_scrape_after_it(monitored: Monitored) -> None:
    # The gateway's scrapes (one a second) since the last request, a canary's, was answered.
    deadline = time.monotonic() + 30
    after: list[float] = []
    while not after and time.monotonic() < deadline:
        scrapes = monitored.query('up{job="gateway"}[20s]')[0]["values"]
        after = [float(t) for t, _ in scrapes if float(t) > monitored.last_canary_at + 0.01]
        time.sleep(0.5)
    assert after, "no scrape of the gateway after the canary's answer"
    first = min(after)
    at_first = {
        expr: monitored.query_at(expr, first)
        for expr in (
            'sum(gateway_rollout_requests_total{label="canary",status="200"})',
            f'sum(gateway_requests_total{{model_version="{CANARY_VERSION}",status="200"}})',
        )
    }
    assert at_first == {
        expr: float(monitored.split[("canary", 200)]) for expr in at_first
    }, "the first scrape after the canary's answer does not count it"


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
    available = sorted(r["metric"]["model_version"] for r in versions)
    assert available == [str(STABLE_VERSION), str(CANARY_VERSION)]
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
