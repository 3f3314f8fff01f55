"""The `model_server` command as a process: help, bad flags, busy ports, ready line, SIGTERM drain."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from clothing_preproc import array_to_tensor_proto
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME
from clothing_protos import serving_pb2
from testing_support import sample_models
from testing_support.model_server_process import ServerProcess
from testing_support.ports import free_port


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "model_server", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def test_help_documents_every_flag() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for flag in (
        "--port",
        "--rest_api_port",
        "--model_name",
        "--model_base_path",
        "--model_config_file",
        "--enable_batching",
        "--batching_parameters_file",
        "--file_system_poll_wait_seconds",
        "--enable_serialization_as_tensor_content",
        "--max_concurrent_requests",
        "MODEL_BASE_PATH",
    ):
        assert flag in result.stdout


def test_bad_flags_are_one_line_and_exit_2() -> None:
    result = _run("--model_base_path", "/m", "--port", "x")
    assert result.returncode == 2
    assert result.stderr == "model_server: error: argument --port: not a port number: 'x'\n"


def test_a_busy_port_is_a_clear_error(model_store: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(
            "--bind_address",
            "127.0.0.1",
            "--port",
            "0",
            "--rest_api_port",
            str(port),
            "--model_base_path",
            str(model_store / "tiny"),
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (REST): Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_ready_line_then_sigterm_stops_cleanly(
    model_store: Path, model_copy: Callable[[str, int, int], Path]
) -> None:
    base = model_copy("tiny", 1, 1).parent
    rest_port = free_port()
    server = ServerProcess.start(
        ["--model_name", COURSE_MODEL_NAME, "--model_base_path", str(base), "--rest_api_port", str(rest_port)]
    )
    try:
        assert server.rest_port == rest_port
        ready = next(line for line in server.lines if "model_server ready:" in line)
        assert ready.endswith(f"models={COURSE_MODEL_NAME}:1")
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            predict = channel.unary_unary(
                "/tensorflow.serving.PredictionService/Predict",
                request_serializer=serving_pb2.PredictRequest.SerializeToString,
                response_deserializer=serving_pb2.PredictResponse.FromString,
            )
            request = serving_pb2.PredictRequest()
            request.model_spec.name = COURSE_MODEL_NAME
            request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(sample_models.random_images(1)))
            assert predict(request, timeout=60).model_spec.version.value == 1
    finally:
        status = server.stop()
    assert status == 0, server.log()
    assert any("SIGTERM received: draining" in line for line in server.lines)
    assert server.lines[-1].endswith("model_server stopped")


@pytest.mark.parametrize("flag", ["--model_config_file"])
def test_missing_config_file_exits_2(flag: str, tmp_path: Path) -> None:
    result = _run(flag, str(tmp_path / "none.config"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"model_server: error: cannot read {tmp_path / 'none.config'}: No such file or directory\n"
    )
