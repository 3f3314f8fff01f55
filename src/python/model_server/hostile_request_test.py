"""Tiny hostile requests against the server as a real process: refused, and its memory stays flat.

Issue 17: a 67-byte Predict request (a DT_COMPLEX128 tensor of shape [2^26] with one value) made
the server allocate ~1 GB before the dtype was checked; DT_STRING ~512 MB. Each case here is sent
four times at once, on gRPC and on REST, and the server's peak resident memory (VmHWM) may grow by
less than 64 MB over all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from clothing_preproc import array_to_tensor_proto
from clothing_preproc.signature import COURSE_INPUT_NAME
from clothing_protos import serving_pb2, tensor_pb2
from testing_support import sample_models
from testing_support.model_server_process import ServerProcess, write_config
from testing_support.ports import free_port

MB = 1 << 20


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("config") / "models.config",
        {"tiny": model_store / "tiny", "two": model_store / "two"},
    )
    flags = ["--model_config_file", str(config), "--rest_api_port", str(free_port())]
    with ServerProcess.start(flags) as process:
        yield process


def _header_only(model: str, alias: str, dtype: int, shape: list[int], **values: Any) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs[alias]
    tensor.dtype = dtype  # type: ignore[assignment]
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    for field, value in values.items():
        getattr(tensor, field).extend(value) if isinstance(value, list) else setattr(tensor, field, value)
    if model == "two":
        other = "b" if alias == "a" else "a"
        example = np.zeros(1, np.int64) if other == "b" else np.zeros((1, 3), np.float32)
        request.inputs[other].CopyFrom(array_to_tensor_proto(example))
    return request.SerializeToString()


# (name, serialised PredictRequest, message the answer starts with)
GRPC_CASES: list[tuple[str, bytes, str]] = [
    (
        "complex128 [2^26], one value (the issue's 67 bytes)",
        _header_only("tiny", COURSE_INPUT_NAME, tensor_pb2.DT_COMPLEX128, [1 << 26], dcomplex_val=[1.0, 2.0]),
        "Expects arg[0] to be float but complex128 is provided",
    ),
    (
        "string [2^26], one value",
        _header_only("tiny", COURSE_INPUT_NAME, tensor_pb2.DT_STRING, [1 << 26], string_val=[b"x"]),
        "Expects arg[0] to be float but string is provided",
    ),
    (
        "float [2^26, 299, 299, 3], no value",
        _header_only("tiny", COURSE_INPUT_NAME, tensor_pb2.DT_FLOAT, [1 << 26, 299, 299, 3]),
        f"tensor parsing error: {COURSE_INPUT_NAME} (tensor of shape [67108864, 299, 299, 3] has more than",
    ),
    (
        "float [64, 299, 299, 3], one value (64 MiB if filled)",
        _header_only("tiny", COURSE_INPUT_NAME, tensor_pb2.DT_FLOAT, [64, 299, 299, 3], float_val=[0.5]),
        f"tensor parsing error: {COURSE_INPUT_NAME} (tensor of shape [64, 299, 299, 3] of float32 carries 1",
    ),
    (
        "int64 [2^26], one value, dtype and rank as the signature wants",
        _header_only("two", "b", tensor_pb2.DT_INT64, [1 << 26], int64_val=[7]),
        "tensor parsing error: b (tensor of shape [67108864] of int64 carries 1",
    ),
    (
        "float [2^24, 3] in 12 bytes of tensor_content",
        _header_only("two", "a", tensor_pb2.DT_FLOAT, [1 << 24, 3], tensor_content=b"\0" * 12),
        "tensor parsing error: a (tensor_content has 12 bytes",
    ),
    (
        "300 dimensions",
        _header_only("tiny", COURSE_INPUT_NAME, tensor_pb2.DT_FLOAT, [1] * 300),
        f"tensor parsing error: {COURSE_INPUT_NAME} (tensor has 300 dimensions",
    ),
]

REST_CASES: list[tuple[str, str, str, str]] = [
    (
        "JSON nested 100,000 deep",
        "tiny",
        '{"instances":' + "[" * 100_000 + "]" * 100_000 + "}",
        "JSON Parse error: maximum recursion depth exceeded",
    ),
    (
        "JSON nested 900 deep",
        "tiny",
        '{"inputs":' + "[" * 900 + "0" + "]" * 900 + "}",
        f"input tensor {COURSE_INPUT_NAME} has shape [1,1,",
    ),
    (
        "an integer of 5,000 digits",
        "two",
        '{"inputs": {"a": [[1, 2, 3]], "b": [' + "9" * 5000 + "]}}",
        "JSON Parse error: Exceeds the limit (4300 digits)",
    ),
    (
        "60,000 rows, a string last (was quadratic to find)",
        "two",
        json.dumps({"inputs": {"a": [[0, 0, 0]] * 60_000 + [["x", 0, 0]], "b": [0] * 60_001}}),
        'JSON Value: "x" Type: String is not of expected type: float',
    ),
    (
        "one 500 kB string among 60,000 numbers (numpy would make each element that wide)",
        "two",
        json.dumps({"inputs": {"a": [[0, 0, 0]] * 20_000 + [["x" * 500_000, 0, 0]], "b": [0] * 20_001}}),
        'JSON Value: "xxxxxxxx',
    ),
]


def _grpc_error(channel: grpc.Channel, body: bytes) -> tuple[grpc.StatusCode, str]:
    predict = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None,  # the bytes as built, exactly what an attacker sends
        response_deserializer=None,
    )
    try:
        predict(body, timeout=60)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("the hostile request succeeded")


def test_tiny_hostile_requests_are_refused_without_allocating(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        # One real request first: the first Predict builds the callable, which is not the attack's cost.
        ok = serving_pb2.PredictRequest()
        ok.model_spec.name = "tiny"
        ok.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(sample_models.random_images(1)))
        channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=serving_pb2.PredictRequest.SerializeToString,
            response_deserializer=serving_pb2.PredictResponse.FromString,
        )(ok, timeout=60)
        before = _peak_rss(server.process.pid)
        with ThreadPoolExecutor(4) as pool, httpx.Client(timeout=60) as rest:
            for name, body, message in GRPC_CASES:
                assert len(body) < 1 << 20
                for code, details in pool.map(lambda b: _grpc_error(channel, b), [body] * 4):
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, name
                    assert details.startswith(message), (name, details)
            for name, model, text, message in REST_CASES:
                assert len(text) < 1 << 20
                url = f"http://127.0.0.1:{server.rest_port}/v1/models/{model}:predict"
                posts = [pool.submit(rest.post, url, content=text) for _ in range(4)]
                for response in (post.result() for post in posts):
                    assert response.status_code == 400, (name, response.text)
                    assert response.json()["error"].startswith(message), (name, response.text[:300])
        grown = _peak_rss(server.process.pid) - before
    sent = 4 * (len(GRPC_CASES) + len(REST_CASES))
    print(f"peak RSS growth over {sent} hostile requests: {grown / MB:.1f} MB")
    assert grown < 64 * MB, f"peak RSS grew by {grown / MB:.0f} MB"
    assert "Traceback" not in server.log()
