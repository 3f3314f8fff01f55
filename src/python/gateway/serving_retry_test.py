"""The gateway's gRPC retry, against real gRPC servers on loopback: a call that fails UNAVAILABLE
(a TF Serving pod stopping) is sent once more, to the other backend; other errors are not."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from clothing_preproc import array_to_tensor_proto
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from gateway.errors import ModelFailed
from gateway.serving import (
    PREDICT_PATH,
    RETRIED_METHODS,
    ServingClient,
    channel_options,
    channel_target,
    service_config,
)
from gateway.settings import ServingTarget
from testing_support.predict_only import PredictOnlyServicer
from testing_support.sample_signatures import image_model_metadata


@dataclass
class Backend(PredictOnlyServicer):
    """One TF Serving stand-in: answers Predict with `mode` and records every attempt it sees."""

    name: str
    mode: grpc.StatusCode = grpc.StatusCode.OK
    # One entry per Predict attempt: the value of gRPC's grpc-previous-rpc-attempts header (0 for
    # a first attempt).
    attempts: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Predict(
        self, request: serving_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> serving_pb2.PredictResponse:
        previous = dict(context.invocation_metadata()).get("grpc-previous-rpc-attempts", "0")
        with self.lock:
            self.attempts.append(int(str(previous)))
        if self.mode != grpc.StatusCode.OK:
            context.abort(self.mode, f"{self.name} refuses")
        batch = request.inputs[COURSE_INPUT_NAME].tensor_shape.dim[0].size
        response = serving_pb2.PredictResponse()
        # The backend's name in the logits: which one answered.
        logits = np.full((batch, 10), 1.0 if self.name == "b" else 0.0, np.float32)
        response.outputs[COURSE_OUTPUT_NAME].CopyFrom(array_to_tensor_proto(logits))
        return response

    def GetModelMetadata(
        self, request: serving_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> serving_pb2.GetModelMetadataResponse:
        return image_model_metadata(request.model_spec.name)


@dataclass
class Running:
    backend: Backend
    server: grpc.Server
    address: str


def _start(name: str) -> Running:
    backend = Backend(name)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(backend, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return Running(backend, server, f"127.0.0.1:{port}")


@pytest.fixture()
def backends() -> Iterator[tuple[Running, Running]]:
    a, b = _start("a"), _start("b")
    yield a, b
    a.server.stop(0)
    b.server.stop(0)


def _settings(a: Running, b: Running) -> ServingTarget:
    # Both addresses behind one target, as a headless Service's DNS answer lists every pod.
    return ServingTarget(address=f"ipv4:{a.address},{b.address}", load_balancing="round_robin")


def _one_image() -> np.ndarray:
    # float32, 1 MB on the wire: more than gRPC's default per-call retry buffer (256 KiB), so
    # the test fails if the channel does not raise it.
    return np.zeros((1, 299, 299, 3), np.float32)


async def _warm_up(client: ServingClient, a: Running, b: Running) -> None:
    """Calls until both backends answered: round_robin has a READY connection to each."""
    info = await client.info()
    call = client.predict_call(info, _one_image())
    for _ in range(50):
        if a.backend.attempts and b.backend.attempts:
            break
        await client.predict(info, call)
    assert a.backend.attempts, "round_robin never reached backend a"
    assert b.backend.attempts, "round_robin never reached backend b"
    a.backend.attempts.clear()
    b.backend.attempts.clear()


def test_unavailable_is_retried_once_on_the_other_backend(backends: tuple[Running, Running]) -> None:
    a, b = backends

    async def scenario() -> list[np.ndarray]:
        client = ServingClient(_settings(a, b))
        try:
            await _warm_up(client, a, b)
            a.backend.mode = grpc.StatusCode.UNAVAILABLE  # the pod going away
            info = await client.info()
            call = client.predict_call(info, _one_image())
            return [(await client.predict(info, call))[0] for _ in range(6)]
        finally:
            await client.close()

    answers = asyncio.run(scenario())
    # Every call answered, by b.
    assert all(logits.shape == (1, 10) for logits in answers)
    assert all((logits == 1.0).all() for logits in answers)
    assert len(b.backend.attempts) == 6
    # round_robin alternates: calls whose first attempt went to a were sent once more, to b.
    refused = len(a.backend.attempts)
    assert refused >= 1
    assert a.backend.attempts == [0] * refused  # a saw first attempts only
    assert sorted(b.backend.attempts) == [0] * (6 - refused) + [1] * refused  # exactly one retry each


def test_a_backend_stopped_mid_test_costs_no_call(backends: tuple[Running, Running]) -> None:
    a, b = backends

    async def scenario() -> int:
        client = ServingClient(_settings(a, b))
        try:
            await _warm_up(client, a, b)
            a.server.stop(0).wait()  # the process gone: its connection closes
            info = await client.info()
            call = client.predict_call(info, _one_image())
            answered = 0
            for _ in range(6):
                logits, _ = await client.predict(info, call)
                answered += int((logits == 1.0).all())
            return answered
        finally:
            await client.close()

    assert asyncio.run(scenario()) == 6
    assert not a.backend.attempts
    assert len(b.backend.attempts) == 6


def test_invalid_argument_is_not_retried(backends: tuple[Running, Running]) -> None:
    a, b = backends

    async def scenario() -> list[str]:
        client = ServingClient(_settings(a, b))
        try:
            await _warm_up(client, a, b)
            a.backend.mode = b.backend.mode = grpc.StatusCode.INVALID_ARGUMENT
            info = await client.info()
            call = client.predict_call(info, _one_image())
            errors = []
            for _ in range(4):
                with pytest.raises(ModelFailed) as refused:
                    await client.predict(info, call)
                errors.append(refused.value.message)
            return errors
        finally:
            await client.close()

    errors = asyncio.run(scenario())
    assert errors == ["TF Serving refused Predict (INVALID_ARGUMENT)"] * 4
    # One attempt per call, none a retry.
    assert sorted(a.backend.attempts + b.backend.attempts) == [0] * 4


def test_the_service_config_is_grpcs_json_for_the_methods_the_gateway_calls() -> None:
    for lb in ("pick_first", "round_robin"):
        settings = ServingTarget(address="tf-serving-headless:8500", load_balancing=lb)
        options = dict(channel_options(settings))
        assert options["grpc.enable_retries"] == 1
        config = json.loads(str(options["grpc.service_config"]))
        assert config == service_config(settings)
        (method_config,) = config["methodConfig"]
        names = {f"/{n['service']}/{n['method']}" for n in method_config["name"]}
        assert PREDICT_PATH in names
        assert names == {f"/tensorflow.serving.PredictionService/{m}" for m in RETRIED_METHODS}
        assert method_config["retryPolicy"]["maxAttempts"] == 2
        assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
        # The whole request fits the buffer gRPC keeps for a retry.
        h, w = settings.preprocessing.target_size
        assert int(str(options["grpc.per_rpc_retry_buffer_size"])) >= settings.max_batch * h * w * 3 * 4
        balancing = config.get("loadBalancingConfig")
        assert balancing == ([{"round_robin": {}}] if lb == "round_robin" else None)
    round_robin = ServingTarget(address="tf-serving-headless:8500", load_balancing="round_robin")
    assert channel_target(round_robin) == "dns:///tf-serving-headless:8500"
    listed = ServingTarget(address="ipv4:127.0.0.1:1,127.0.0.1:2", load_balancing="round_robin")
    assert channel_target(listed) == "ipv4:127.0.0.1:1,127.0.0.1:2"
