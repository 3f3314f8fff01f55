"""Traces: the gateway's spans as an OTLP/HTTP collector on loopback receives them, and the
`traceparent` TF Serving receives in Predict's gRPC metadata."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from clothing_settings import SettingError
from gateway import Settings, parse_settings
from gateway.tracing import traces_url
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.otlp_receiver import OtlpReceiver, ReceivedSpan
from testing_support.ports import closed_port_address, free_port
from testing_support.predict_only import PredictOnlyServicer
from testing_support.processes import RunningProcess, child_environment, python_module
from testing_support.sample_signatures import available_model_status, image_model_metadata

RunGateway = Callable[..., RunningGateway]
STAGES = ("fetch", "queue", "decode", "preprocess", "predict")
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class RecordingServing(PredictOnlyServicer, prediction_service_pb2_grpc.ModelServiceServicer):
    """A TF Serving stand-in (the course's signature, version 7) that keeps each Predict's metadata."""

    def __init__(self) -> None:
        self.predict_metadata: list[dict[str, str]] = []

    def Predict(
        self, request: serving_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> serving_pb2.PredictResponse:
        self.predict_metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        images = tensor_proto_to_array(request.inputs[COURSE_INPUT_NAME])
        response = serving_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 7
        logits = np.zeros((images.shape[0], 10), dtype=np.float32)
        response.outputs[COURSE_OUTPUT_NAME].CopyFrom(array_to_tensor_proto(logits))
        return response

    def GetModelMetadata(
        self, request: serving_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelMetadataResponse:
        return image_model_metadata(request.model_spec.name, 7)

    def GetModelStatus(
        self, request: serving_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelStatusResponse:
        return available_model_status(7)


@dataclass
class Serving:
    address: str
    servicer: RecordingServing = field(repr=False)


@pytest.fixture()
def serving() -> Iterator[Serving]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", -1)]
    )
    servicer = RecordingServing()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    prediction_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Serving(f"127.0.0.1:{port}", servicer)
    finally:
        server.stop(0)


@pytest.fixture()
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def settings(tf_serving: str, **variables: str) -> Settings:
    environ = {
        "TF_SERVING_HOST": tf_serving,
        "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "GATEWAY_SIGNATURE": "serving_default",
    }
    return parse_settings([], environ | variables)


def sampled_flag(traceparent: list[str]) -> bool:
    """The sampled bit of a traceparent's flags (the others may be set: W3C's random flag)."""
    return bool(int(traceparent[3], 16) & 1)


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans}


def has(*names: str) -> Callable[[list[ReceivedSpan]], bool]:
    return lambda spans: set(names) <= {s.name for s in spans}


def test_a_classification_is_one_trace_continuing_the_clients(
    run_gateway: RunGateway, serving: Serving, receiver: OtlpReceiver, image_host: ImageHost
) -> None:
    image = image_bytes("JPEG", (120, 90))
    image_host.routes["/shirt.jpg"] = Reply(200, image, {"Content-Type": "image/jpeg"})
    gateway = run_gateway(
        settings(serving.address, GATEWAY_OTLP_ENDPOINT=receiver.url, GATEWAY_SERVICE_NAME="shop-gateway")
    )
    answer = httpx.post(
        f"{gateway.url}/predict",
        json={"url": image_host.url("/shirt.jpg")},
        headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "shop=checkout"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text

    spans = by_name(receiver.wait_for(has("POST /predict", *STAGES)))
    server = spans["POST /predict"]
    # The server span continues the client's trace, under the client's span.
    assert (server.trace_id, server.parent_span_id, server.kind) == (CLIENT_TRACE, CLIENT_SPAN, "server")
    assert server.service_name == "shop-gateway"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/predict"
    assert server.attributes["url.path"] == "/predict"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gateway.request_id"] == answer.headers["x-request-id"]
    assert server.status == "unset"
    # Each stage is a child of the server span, within it, in the order the request went through them.
    stages = [spans[name] for name in STAGES]
    for stage in stages:
        assert (stage.trace_id, stage.parent_span_id, stage.kind) == (
            CLIENT_TRACE,
            server.span_id,
            "internal",
        )
        assert server.start_ns <= stage.start_ns <= stage.end_ns <= server.end_ns, stage.name
    for before, after in itertools.pairwise(stages):
        assert before.end_ns <= after.start_ns, (before.name, after.name)
    fetch, queue, decode, preprocess, predict = stages
    assert fetch.attributes["gateway.images"] == 1
    assert fetch.attributes["gateway.image_bytes"] == len(image)
    assert decode.attributes["gateway.images"] == 1
    assert decode.attributes["gateway.images_failed"] == 0
    assert preprocess.attributes["model.signature"] == "serving_default"
    # One float32 image of 299×299×3 and the request around it.
    assert preprocess.attributes["gateway.request_bytes"] > 299 * 299 * 3 * 4
    assert predict.attributes["model.name"] == "clothing-model"
    assert predict.attributes["model.signature"] == "serving_default"
    assert predict.attributes["model.version"] == 7
    assert predict.attributes["rpc.method"] == "Predict"
    assert predict.attributes["gateway.images"] == 1
    # TF Serving is told the trace: its span would be a child of the gateway's predict span.
    (metadata,) = serving.servicer.predict_metadata
    assert metadata["traceparent"] == f"00-{CLIENT_TRACE}-{predict.span_id}-01"
    assert metadata["tracestate"] == "shop=checkout"


def test_a_batch_from_the_body_has_no_fetch_and_counts_its_failed_images(
    run_gateway: RunGateway, serving: Serving, receiver: OtlpReceiver
) -> None:
    gateway = run_gateway(settings(serving.address, GATEWAY_OTLP_ENDPOINT=receiver.url))
    good = image_bytes("PNG")
    images = [{"b64": base64.b64encode(good).decode()}, {"b64": base64.b64encode(b"not an image").decode()}]
    answer = httpx.post(f"{gateway.url}/v1/classify/batch", json={"images": images}, timeout=30)
    assert answer.status_code == 200, answer.text
    spans = by_name(receiver.wait_for(has("POST /v1/classify/batch", "decode", "predict")))
    assert "fetch" not in spans  # the images came in the body
    assert spans["decode"].attributes["gateway.images"] == 2
    assert spans["decode"].attributes["gateway.images_failed"] == 1
    assert spans["predict"].attributes["gateway.images"] == 1
    # A trace the gateway started: a root span, and TF Serving gets its id.
    server = spans["POST /v1/classify/batch"]
    assert server.parent_span_id == ""
    assert serving.servicer.predict_metadata[0]["traceparent"].startswith(f"00-{server.trace_id}-")


def test_spans_are_named_by_route_template_and_failures_marked(
    run_gateway: RunGateway, receiver: OtlpReceiver
) -> None:
    gateway = run_gateway(settings(closed_port_address(), GATEWAY_OTLP_ENDPOINT=receiver.url))
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert client.get("/v2/models/clothing-model/ready").status_code == 400  # not ready: TF Serving down
        assert client.get("/no/such/page").status_code == 404
        assert (
            client.post(
                "/v1/classify", content=image_bytes("PNG"), headers={"Content-Type": "image/png"}
            ).status_code
            == 503
        )
        assert (
            client.post(
                "/v1/classify", content=b"{", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
    spans = receiver.wait_for(lambda spans: len([s for s in spans if s.kind == "server"]) >= 4)
    server = {(s.name, s.attributes["http.response.status_code"]): s for s in spans if s.kind == "server"}
    # The client's words (model names, unknown paths) never name a span.
    assert (
        server[("GET /v2/models/{name}/ready", 400)].attributes["url.path"]
        == "/v2/models/clothing-model/ready"
    )
    unknown = server[("GET", 404)]
    assert "http.route" not in unknown.attributes
    assert unknown.status == "unset"  # a 4xx is the client's doing
    down = server[("POST /v1/classify", 503)]
    assert (down.status, down.attributes["error.type"]) == ("error", "503")
    assert server[("POST /v1/classify", 400)].status == "unset"


def test_an_unsampled_trace_records_nothing_yet_tells_tf_serving(
    run_gateway: RunGateway, serving: Serving, receiver: OtlpReceiver
) -> None:
    gateway = run_gateway(
        settings(serving.address, GATEWAY_OTLP_ENDPOINT=receiver.url, GATEWAY_TRACE_SAMPLE_RATIO="0")
    )
    body = image_bytes("PNG")
    headers = {"Content-Type": "image/png"}
    assert httpx.post(f"{gateway.url}/v1/classify", content=body, headers=headers).status_code == 200
    # A client's sampled flag wins over the ratio (parent-based sampling).
    sampled = {**headers, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    assert httpx.post(f"{gateway.url}/v1/classify", content=body, headers=sampled).status_code == 200
    spans = receiver.wait_for(has("POST /v1/classify", "predict"))
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}
    first, second = (m["traceparent"].split("-") for m in serving.servicer.predict_metadata)
    assert not sampled_flag(first)  # not sampled, and passed on as such
    assert first[1] != CLIENT_TRACE
    assert sampled_flag(second)
    assert second[1] == CLIENT_TRACE
    gateway.stop()
    assert {s.trace_id for s in receiver.spans} == {CLIENT_TRACE}


def test_without_an_endpoint_nothing_is_traced_or_passed_on(
    run_gateway: RunGateway, serving: Serving
) -> None:
    gateway = run_gateway(settings(serving.address))
    answer = httpx.post(
        f"{gateway.url}/v1/classify",
        content=image_bytes("PNG"),
        headers={"Content-Type": "image/png", "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
    )
    assert answer.status_code == 200
    (metadata,) = serving.servicer.predict_metadata
    assert "traceparent" not in metadata


def test_the_last_spans_are_flushed_at_shutdown(
    run_gateway: RunGateway, serving: Serving, receiver: OtlpReceiver
) -> None:
    gateway = run_gateway(settings(serving.address, GATEWAY_OTLP_ENDPOINT=receiver.url))
    answer = httpx.post(
        f"{gateway.url}/v1/classify", content=image_bytes("PNG"), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 200
    # The export thread sends every 5 s; stopping the gateway sends what is queued at once.
    gateway.stop()
    assert has("POST /v1/classify", *STAGES[1:])(receiver.spans)


def test_a_collector_that_never_answers_delays_no_request(run_gateway: RunGateway, serving: Serving) -> None:
    """The exporter posts from its own thread through a bounded queue: with the collector stalled,
    every request is answered as without tracing, and shutdown waits at most GATEWAY_OTLP_TIMEOUT."""
    with OtlpReceiver(stalled=True) as stalled:
        gateway = run_gateway(
            settings(
                serving.address,
                GATEWAY_OTLP_ENDPOINT=stalled.url,
                GATEWAY_OTLP_TIMEOUT="2",
                GATEWAY_TRACE_QUEUE="8",
            )
        )
        body = image_bytes("PNG")
        statuses = []
        with httpx.Client(base_url=gateway.url, timeout=5) as client:
            for _ in range(60):  # 360 spans: the queue of 8 overflows many times over
                statuses.append(
                    client.post(
                        "/v1/classify", content=body, headers={"Content-Type": "image/png"}
                    ).status_code
                )
        assert statuses == [200] * 60
        started = time.monotonic()
        gateway.stop()
        assert time.monotonic() - started < 10
        # The export thread ends too, once its post times out.
        deadline = time.monotonic() + 5
        while any(t.name == "OtelBatchSpanRecordProcessor" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the export thread outlived the gateway"
            time.sleep(0.1)
        assert stalled.spans == []


def test_a_collector_that_is_down_delays_no_request(run_gateway: RunGateway, serving: Serving) -> None:
    gateway = run_gateway(settings(serving.address, GATEWAY_OTLP_ENDPOINT=f"http://{closed_port_address()}"))
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        for _ in range(20):
            answer = client.post(
                "/v1/classify", content=image_bytes("PNG"), headers={"Content-Type": "image/png"}
            )
            assert answer.status_code == 200


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_OTLP_ENDPOINT", "collector:4318"),
        ("GATEWAY_OTLP_ENDPOINT", "ftp://collector:4318"),
        ("GATEWAY_OTLP_ENDPOINT", "http://collector:99999"),
        ("GATEWAY_OTLP_ENDPOINT", "http:///v1/traces"),
        ("GATEWAY_TRACE_SAMPLE_RATIO", "1.5"),
        ("GATEWAY_TRACE_SAMPLE_RATIO", "all"),
        ("GATEWAY_SERVICE_NAME", "my gateway"),
        ("GATEWAY_SERVICE_NAME", "x" * 101),
        ("GATEWAY_OTLP_TIMEOUT", "0"),
        ("GATEWAY_OTLP_TIMEOUT", "soon"),
        ("GATEWAY_TRACE_QUEUE", "0"),
    ],
)
def test_a_bad_tracing_setting_is_refused_in_one_line_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingError) as refused:
        parse_settings([], {variable: value})
    message = str(refused.value)
    assert variable in message
    assert "\n" not in message


def test_tracing_settings_and_the_endpoint_url() -> None:
    default = parse_settings([], {}).tracing
    assert (default.endpoint, default.sample_ratio, default.service_name) == ("", 1.0, "clothing-gateway")
    given = parse_settings(
        [], {"GATEWAY_OTLP_ENDPOINT": "https://otel.example:4318", "GATEWAY_TRACE_SAMPLE_RATIO": "0.25"}
    ).tracing
    assert (given.endpoint, given.sample_ratio) == ("https://otel.example:4318", 0.25)
    # A collector's base URL gets OTLP's traces path; a URL with a path is used as it is.
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://gw.example/otlp/v1/traces") == "http://gw.example/otlp/v1/traces"


def _gateway_process(tmp_path: Path, tf_serving: str, **variables: str) -> tuple[RunningProcess, str]:
    port = free_port()
    env = child_environment(
        {
            "TF_SERVING_HOST": tf_serving,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_SIGNATURE": "serving_default",
            **variables,
        }
    )
    gateway = RunningProcess("gateway", python_module("gateway"), env, tmp_path / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    gateway.wait_until(lambda: _answers(f"{url}/healthz"), 60, "the gateway")
    return gateway, url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_gateway_process_exports_its_spans_before_it_ends(
    tmp_path: Path, serving: Serving, receiver: OtlpReceiver
) -> None:
    gateway, url = _gateway_process(tmp_path, serving.address, GATEWAY_OTLP_ENDPOINT=receiver.url)
    try:
        answer = httpx.post(
            f"{url}/v1/classify", content=image_bytes("PNG"), headers={"Content-Type": "image/png"}
        )
        assert answer.status_code == 200, answer.text
    finally:
        assert gateway.stop() in (0, -15, 143)  # SIGTERM: drained, then ended by the signal
    # Sent on SIGTERM, before the export thread's next round (every 5 s).
    assert has("POST /v1/classify", *STAGES[1:])(receiver.spans), gateway.log_tail()
    server = by_name(receiver.spans)["POST /v1/classify"]
    assert server.service_name == "clothing-gateway"
    assert server.attributes["gateway.request_id"] == answer.headers["x-request-id"]
    assert "tracing: spans to " + receiver.url + "/v1/traces" in gateway.log_text()


def test_a_collector_that_is_down_costs_a_log_line_not_one_per_span(tmp_path: Path, serving: Serving) -> None:
    gateway, url = _gateway_process(
        tmp_path,
        serving.address,
        GATEWAY_OTLP_ENDPOINT=f"http://{closed_port_address()}",
        GATEWAY_OTLP_TIMEOUT="2",
        GATEWAY_TRACE_QUEUE="8",
    )
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            for _ in range(30):  # 180 spans through a queue of 8
                answer = client.post(
                    "/v1/classify", content=image_bytes("PNG"), headers={"Content-Type": "image/png"}
                )
                assert answer.status_code == 200
    finally:
        gateway.stop()
    log = gateway.log_text()
    dropped = [line for line in log.splitlines() if "dropping" in line.lower()]
    assert len(dropped) == 1, log
    assert "Traceback" not in log


_SDK_LOADED = """
import sys
from starlette.testclient import TestClient
from gateway import create_app, parse_settings
environ = {"TF_SERVING_HOST": "127.0.0.1:1", "GATEWAY_OTLP_ENDPOINT": sys.argv[1]}
with TestClient(create_app(parse_settings([], environ))) as client:
    client.get("/healthz", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
print("opentelemetry.sdk" in sys.modules)
"""


@pytest.mark.parametrize(("endpoint", "loaded"), [("", "False"), ("http://127.0.0.1:1", "True")])
def test_with_tracing_off_the_sdk_is_never_loaded(endpoint: str, loaded: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SDK_LOADED, endpoint],
        env=child_environment({}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == loaded


def test_the_gateway_process_refuses_a_bad_tracing_setting_in_one_line(tmp_path: Path) -> None:
    env = child_environment({"GATEWAY_TRACE_SAMPLE_RATIO": "2"})
    gateway = RunningProcess("gateway", python_module("gateway"), env, tmp_path / "gateway.log")
    assert gateway.wait(60) == 2
    assert gateway.log_text().strip() == "gateway: GATEWAY_TRACE_SAMPLE_RATIO=2.0 is outside 0..1"
