"""KServe v2 over gRPC (`inference.GRPCInferenceService`, GATEWAY_GRPC_PORT), called with the
project's generated stubs against a gateway in front of a stand-in TF Serving whose logits follow
the pixels: the same numbers as the REST v2 route, the same errors with gRPC codes, the bounds a
hostile client meets, and the server's life with the gateway's."""

from __future__ import annotations

import base64
import functools
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from api_keys.key_file import digest_of
from clothing_preproc import CLOTHING_LABELS
from clothing_preproc.signature import COURSE_MODEL_NAME
from clothing_protos import grpc_predict_v2_pb2 as pb
from clothing_protos import grpc_predict_v2_pb2_grpc as pb_grpc
from clothing_settings import SettingError
from gateway import parse_settings
from gateway.errors import ERRORS, GRPC_CODES, INTERNAL
from testing_support.image_host import image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.pixel_means_serving import pixel_means_serving
from testing_support.ports import free_port
from testing_support.processes import RunningProcess, child_environment, python_module

RunGateway = Callable[..., RunningGateway]
KEY, OLD_KEY = "alice-key-Zm9vYmFyYmF6cXV4", "old-key-cmV2b2tlZA"
IMAGES = [
    image_bytes("JPEG", (640, 480), (200, 30, 60)),
    image_bytes("PNG", (300, 500), (20, 40, 220)),
    image_bytes("WEBP", (120, 90), (30, 200, 60)),
]


class GrpcGateway:
    """A gateway in this process with its gRPC port on, and a channel to it."""

    def __init__(self, gateway: RunningGateway, port: int) -> None:
        self.gateway = gateway
        self.address = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)


@pytest.fixture(scope="module")
def tf_serving() -> Iterator[str]:
    with pixel_means_serving() as address:
        yield address


@pytest.fixture()
def start(run_gateway: RunGateway, tf_serving: str) -> Iterator[Callable[..., GrpcGateway]]:
    opened: list[GrpcGateway] = []

    def started(**variables: str) -> GrpcGateway:
        port = free_port()
        env = {"TF_SERVING_HOST": tf_serving, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_GRPC_PORT": str(port)}
        gateway = GrpcGateway(run_gateway(parse_settings([], env | variables)), port)
        opened.append(gateway)
        return gateway

    yield started
    for gateway in opened:
        gateway.channel.close()


@pytest.fixture()
def gateway(start: Callable[..., GrpcGateway]) -> GrpcGateway:
    return start()


def infer_request(images: list[bytes], *, raw: bool = False, **fields: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=COURSE_MODEL_NAME, **fields)  # type: ignore[arg-type]
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    if raw:
        # Triton's layout: each element a 4-byte little-endian length and its bytes.
        request.raw_input_contents.append(b"".join(struct.pack("<I", len(i)) + i for i in images))
    else:
        tensor.contents.bytes_contents.extend(images)
    return request


def rest_v2(gateway: GrpcGateway, images: list[bytes]) -> dict[str, np.ndarray]:
    """The REST v2 route's FP32 outputs for the same images."""
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ]
    }
    r = httpx.post(f"{gateway.gateway.url}/v2/models/{COURSE_MODEL_NAME}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return {
        o["name"]: np.array(o["data"], dtype=np.float32).reshape(o["shape"])
        for o in r.json()["outputs"]
        if o["datatype"] == "FP32"
    }


def raw_fp32(response: pb.ModelInferResponse, name: str) -> np.ndarray:
    index = [o.name for o in response.outputs].index(name)
    shape = tuple(response.outputs[index].shape)
    return np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(shape)


def raw_strings(response: pb.ModelInferResponse, name: str) -> list[str]:
    data = response.raw_output_contents[[o.name for o in response.outputs].index(name)]
    out, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        out.append(data[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return out


def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def test_health_and_metadata(gateway: GrpcGateway) -> None:
    stub = gateway.stub
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=COURSE_MODEL_NAME)).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=COURSE_MODEL_NAME, version="1")).ready
    # A model or version not served is not ready, rather than an error.
    assert not stub.ModelReady(pb.ModelReadyRequest(name="other-model")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name=COURSE_MODEL_NAME, version="7")).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "clothing-classifier-gateway"
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=COURSE_MODEL_NAME))
    assert (meta.name, list(meta.versions)) == (COURSE_MODEL_NAME, ["1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("image", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("probabilities", "FP32", [-1, 10]),
        ("logits", "FP32", [-1, 10]),
        ("labels", "BYTES", [10]),
    ]
    error = status_of(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="other-model")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_bytes_contents_get_the_rest_routes_float32_scores(gateway: GrpcGateway) -> None:
    response = gateway.stub.ModelInfer(infer_request(IMAGES, id="42"))
    assert (response.model_name, response.model_version, response.id) == (COURSE_MODEL_NAME, "1", "42")
    assert not response.raw_output_contents
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs) == ["probabilities", "logits", "labels"]
    rest = rest_v2(gateway, IMAGES)
    for name in ("probabilities", "logits"):
        assert (outputs[name].datatype, list(outputs[name].shape)) == ("FP32", [3, 10])
        scores = np.array(outputs[name].contents.fp32_contents, dtype=np.float32).reshape(3, 10)
        assert scores.tolist() == rest[name].tolist()
    assert [b.decode() for b in outputs["labels"].contents.bytes_contents] == list(CLOTHING_LABELS)
    # Every image its own numbers: the stand-in's logits follow the pixels.
    assert len({tuple(row) for row in rest["logits"].tolist()}) == 3
    # The answer says which decode options shaped it, as the REST answer's parameters do.
    assert response.parameters["family"].string_param == "xception"


def test_raw_input_gets_raw_output_with_the_same_numbers(gateway: GrpcGateway) -> None:
    response = gateway.stub.ModelInfer(infer_request(IMAGES, raw=True))
    assert len(response.raw_output_contents) == 3
    assert all(not o.HasField("contents") for o in response.outputs)
    rest = rest_v2(gateway, IMAGES)
    assert raw_fp32(response, "logits").tolist() == rest["logits"].tolist()
    assert raw_fp32(response, "probabilities").tolist() == rest["probabilities"].tolist()
    assert raw_strings(response, "labels") == list(CLOTHING_LABELS)


def test_outputs_asked_for_by_name_in_that_order_raw_when_asked(gateway: GrpcGateway) -> None:
    request = infer_request(IMAGES[:1])
    request.outputs.add(name="labels")
    request.outputs.add(name="logits")
    response = gateway.stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["labels", "logits"]
    assert len(response.outputs[1].contents.fp32_contents) == 10
    request.outputs[1].parameters["binary_data"].bool_param = True
    # Raw contents are for all outputs or none: one output asked raw makes them all raw.
    response = gateway.stub.ModelInfer(request)
    assert raw_strings(response, "labels") == list(CLOTHING_LABELS)
    assert raw_fp32(response, "logits").shape == (1, 10)


def test_the_requests_parameters_set_the_decode_options_the_operator_allows(gateway: GrpcGateway) -> None:
    request = infer_request(IMAGES[:1])
    request.parameters["exif_orientation"].bool_param = True
    response = gateway.stub.ModelInfer(request)
    assert response.parameters["exif_orientation"].bool_param is True
    assert response.parameters["draft"].bool_param is False
    request.parameters["draft"].bool_param = True  # not one a client may set by default
    error = status_of(lambda: gateway.stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "draft cannot be set per request" in str(error.details())


def test_model_version_pins_the_version(gateway: GrpcGateway) -> None:
    response = gateway.stub.ModelInfer(infer_request(IMAGES[:1], model_version="1"))
    assert response.model_version == "1"
    error = status_of(lambda: gateway.stub.ModelInfer(infer_request(IMAGES[:1], model_version="x1")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_version='x1'" in str(error.details())


def test_errors_carry_the_routes_messages_with_grpc_codes(gateway: GrpcGateway) -> None:
    stub = gateway.stub
    request = infer_request(IMAGES[:1])
    request.model_name = "other-model"
    error = status_of(lambda: stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no model named 'other-model'" in str(error.details())

    error = status_of(lambda: stub.ModelInfer(infer_request([IMAGES[0], b"not an image"])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith("image 2")

    bad = infer_request(IMAGES[:1])
    bad.inputs[0].datatype = "FP32"
    error = status_of(lambda: stub.ModelInfer(bad))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'named "image" with datatype BYTES' in str(error.details())

    short = infer_request(IMAGES[:2], raw=True)
    short.inputs[0].shape[0] = 3
    error = status_of(lambda: stub.ModelInfer(short))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ends before image 3" in str(error.details())

    error = status_of(lambda: stub.ModelInfer(infer_request(IMAGES * 6)))  # 18, over GATEWAY_MAX_BATCH
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the limit is 16" in str(error.details())


def test_an_image_over_the_byte_limit_is_resource_exhausted(start: Callable[..., GrpcGateway]) -> None:
    gateway = start(GATEWAY_MAX_IMAGE_BYTES=str(len(IMAGES[0]) - 1))
    for request in (infer_request([IMAGES[0]]), infer_request([IMAGES[0]], raw=True)):
        error = status_of(functools.partial(gateway.stub.ModelInfer, request))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"the image is {len(IMAGES[0])} bytes" in str(error.details())


def test_a_message_over_the_limit_is_refused_by_grpc(start: Callable[..., GrpcGateway]) -> None:
    # One image of 64 KiB in a batch of one: the message limit is 64 KiB + 4 + 64 KiB.
    gateway = start(GATEWAY_MAX_BATCH="1", GATEWAY_MAX_IMAGE_BYTES=str(64 * 1024))
    error = status_of(lambda: gateway.stub.ModelInfer(infer_request([b"x" * (256 * 1024)])))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(error.details())
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live


def test_calls_are_counted_with_their_status(gateway: GrpcGateway) -> None:
    gateway.stub.ServerLive(pb.ServerLiveRequest())
    gateway.stub.ModelInfer(infer_request(IMAGES[:1]))
    request = infer_request(IMAGES[:1])
    request.model_name = "other-model"
    status_of(lambda: gateway.stub.ModelInfer(request))
    page = httpx.get(f"{gateway.gateway.url}/metrics").text
    assert 'gateway_requests_total{model_version="",route="grpc:ServerLive",status="200"} 1.0' in page
    assert 'gateway_requests_total{model_version="1",route="grpc:ModelInfer",status="200"} 1.0' in page
    assert 'gateway_requests_total{model_version="",route="grpc:ModelInfer",status="404"} 1.0' in page
    assert 'gateway_errors_total{code="not_found"} 1.0' in page
    assert 'gateway_request_duration_seconds_count{route="grpc:ModelInfer"} 2.0' in page


def connectivity(channel: grpc.Channel) -> Callable[[], grpc.ChannelConnectivity | None]:
    """The channel's state as gRPC last reported it."""
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append)
    return lambda: states[-1] if states else None


def closed_by_the_server(channel: grpc.Channel, within: float) -> bool:
    """Whether the channel's connection leaves READY (a GOAWAY sends it back to IDLE) in time."""
    state = connectivity(channel)
    deadline = time.monotonic() + within
    while state() in (None, grpc.ChannelConnectivity.READY):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize(
    "variable", ["GATEWAY_GRPC_MAX_IDLE", "GATEWAY_GRPC_MAX_AGE"], ids=["idle", "age"]
)
def test_connections_are_closed_after_their_idle_time_and_age(
    start: Callable[..., GrpcGateway], variable: str
) -> None:
    gateway = start(**{variable: "1"})
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live
    assert closed_by_the_server(gateway.channel, within=10)
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live  # a client reconnects on its next call


def test_a_client_pinging_too_often_is_disconnected(start: Callable[..., GrpcGateway]) -> None:
    gateway = start(GATEWAY_GRPC_MIN_PING_INTERVAL="5")
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live  # a client that does not ping
    pings = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    with grpc.insecure_channel(gateway.address, options=pings) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert closed_by_the_server(channel, within=10)
    # The client that keeps to the interval keeps its connection.
    state = connectivity(gateway.channel)
    time.sleep(0.2)
    assert state() == grpc.ChannelConnectivity.READY


def test_connections_past_the_cap_are_closed(start: Callable[..., GrpcGateway]) -> None:
    gateway = start(GATEWAY_GRPC_MAX_CONNECTIONS="1")
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live
    # Its own connection: channels of one process otherwise share one to the same address.
    with grpc.insecure_channel(gateway.address, options=[("grpc.use_local_subchannel_pool", 1)]) as second:
        stub = pb_grpc.GRPCInferenceServiceStub(second)
        error = status_of(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=2))
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live


def test_stopping_the_gateway_stops_its_grpc_server(gateway: GrpcGateway) -> None:
    assert gateway.stub.ServerLive(pb.ServerLiveRequest()).live
    gateway.gateway.stop()
    with grpc.insecure_channel(gateway.address) as fresh:
        stub = pb_grpc.GRPCInferenceServiceStub(fresh)
        error = status_of(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=2))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_api_keys_hold_for_grpc_calls_but_the_health_checks(
    start: Callable[..., GrpcGateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice {digest_of(KEY).hex()}\nold {digest_of(OLD_KEY).hex()} revoked\n")
    gateway = start(GATEWAY_API_KEYS_FILE=str(keys))
    stub = gateway.stub
    assert stub.ServerLive(pb.ServerLiveRequest()).live  # probes carry no key
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    error = status_of(lambda: stub.ModelInfer(infer_request(IMAGES[:1])))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs an API key" in str(error.details())
    revoked = [("x-api-key", OLD_KEY)]
    asked = pb.ModelMetadataRequest(name=COURSE_MODEL_NAME)
    error = status_of(lambda: stub.ModelMetadata(asked, metadata=revoked))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for metadata in ([("authorization", f"Bearer {KEY}")], [("x-api-key", KEY)]):
        assert stub.ModelInfer(infer_request(IMAGES[:1]), metadata=metadata).outputs


def test_every_answer_of_the_error_table_has_a_grpc_code() -> None:
    assert {kind.status for kind in (*ERRORS, INTERNAL)} <= set(GRPC_CODES)
    assert GRPC_CODES[404] == grpc.StatusCode.NOT_FOUND
    assert GRPC_CODES[413] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert GRPC_CODES[503] == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("GATEWAY_GRPC_PORT", "eighty", "is not a whole number"),
        ("GATEWAY_GRPC_PORT", "70000", "outside 0..65535"),
        ("GATEWAY_GRPC_PORT", "9696", "is GATEWAY_PORT's port"),
        ("GATEWAY_GRPC_MAX_MESSAGE_BYTES", "100", "below 1024"),
        ("GATEWAY_GRPC_MAX_STREAMS", "0", "outside 1..10000"),
        ("GATEWAY_GRPC_WINDOW_BYTES", "1000", "outside 65535.."),
        ("GATEWAY_GRPC_MAX_CONNECTIONS", "-1", "outside 1..1000000"),
        ("GATEWAY_GRPC_MIN_PING_INTERVAL", "0", "more than 0"),
        ("GATEWAY_GRPC_MAX_IDLE", "soon", "not a number of seconds"),
        ("GATEWAY_GRPC_MAX_AGE", "7200", "at most 3600"),
    ],
)
def test_bad_grpc_settings_are_refused_naming_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(SettingError, match=words) as e:
        parse_settings([], {variable: value})
    assert str(e.value).startswith(variable)


def test_the_message_limit_is_a_full_batch_unless_set() -> None:
    settings = parse_settings([], {"GATEWAY_MAX_BATCH": "2", "GATEWAY_MAX_IMAGE_BYTES": "1000"})
    assert settings.grpc.port == 0  # off unless asked for
    assert settings.grpc.message_limit(2, 1000) == 2 * 1004 + 64 * 1024
    set_limit = parse_settings([], {"GATEWAY_GRPC_MAX_MESSAGE_BYTES": "4096"})
    assert set_limit.grpc.message_limit(16, 1 << 20) == 4096


# `python -m gateway` as deployed: its own process, so its memory and its signals are its own.


def _gateway_process(tmp_path: Path, tf_serving: str, **variables: str) -> RunningProcess:
    env = child_environment({"TF_SERVING_HOST": tf_serving, "GATEWAY_HOST": "127.0.0.1", **variables})
    return RunningProcess("gateway", python_module("gateway"), env, tmp_path / "gateway.log")


def _live(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            return bool(stub.ServerLive(pb.ServerLiveRequest(), timeout=2).live)
        except grpc.RpcError:
            return False


def test_oversized_messages_do_not_grow_the_process_and_sigterm_stops_grpc(
    tmp_path: Path, tf_serving: str
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    gateway = _gateway_process(
        tmp_path,
        tf_serving,
        GATEWAY_PORT=str(free_port()),
        GATEWAY_GRPC_PORT=str(port),
        GATEWAY_MAX_BATCH="1",
        GATEWAY_MAX_IMAGE_BYTES=str(1 << 20),
    )
    try:
        gateway.wait_until(lambda: _live(address), 60, "the gRPC port")
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            huge = infer_request([b"x" * (48 << 20)])  # 48 MiB against a limit of 1 MiB + 68 KiB

            def refuse(times: int) -> None:
                for _ in range(times):
                    error = status_of(lambda: stub.ModelInfer(huge, timeout=30))
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "larger than max" in str(error.details())

            stub.ModelInfer(infer_request(IMAGES[:1]), timeout=30)  # the first call's allocations
            before = gateway.rss()
            refuse(10)  # 480 MiB sent: the gateway reads at most a window of each
            grown = gateway.rss() - before
            assert grown < 16 << 20, f"the gateway grew by {grown >> 20} MiB"
            assert stub.ModelInfer(infer_request(IMAGES[:1]), timeout=30).outputs
        assert gateway.stop(grace=30) in (0, -15)
        assert not _live(address)
    finally:
        gateway.stop()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def test_a_taken_grpc_port_stops_the_start_in_one_line(tmp_path: Path, tf_serving: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = _gateway_process(
            tmp_path, tf_serving, GATEWAY_PORT=str(free_port()), GATEWAY_GRPC_PORT=str(port)
        )
        status = gateway.wait(60)
    log = (tmp_path / "gateway.log").read_text()
    assert status == 1, log
    assert f"gateway: GATEWAY_GRPC_PORT={port}: Address already in use" in log
    assert "Traceback" not in log
