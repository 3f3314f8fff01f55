"""The server as TF Serving's own test suite starts it (issue 22): its flags, a zero-padded version
folder, gRPC on a unix socket, channel arguments, Prometheus at the configured path, the model
config re-read while serving, and TF Serving's wording for a model config that does not parse.

Everything here runs against `python -m model_server` processes: these are command-line and
socket behaviours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from clothing_preproc import array_to_tensor_proto
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from model_server.settings import IGNORED_FLAGS
from testing_support import sample_models
from testing_support.model_server_process import ServerProcess
from testing_support.ports import free_port

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# One 299×299×3 float32 image is 1.07 MB; four are 4.3 MB, above this channel argument.
MAX_RECEIVE = 4_000_000


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "model_server", *args],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )


def _request(model: str, images: int = 1) -> serving_pb2.PredictRequest:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(sample_models.random_images(images)))
    return request


def _predict(target: str, request: serving_pb2.PredictRequest) -> serving_pb2.PredictResponse:
    with grpc.insecure_channel(target) as channel:
        response: serving_pb2.PredictResponse = prediction_service_pb2_grpc.PredictionServiceStub(
            channel
        ).Predict(request, timeout=60)
        return response


@pytest.fixture(scope="module")
def short_tmp() -> Iterator[Path]:
    # A unix socket path must stay under 108 bytes; pytest's tmp paths can be longer.
    path = Path(tempfile.mkdtemp(prefix="ms-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def suite_server(short_tmp: Path) -> Iterator[ServerProcess]:
    """A server started with a command line of the kind TF Serving's suite uses, serving an
    export in `00000123` (TF Serving's quickstart layout)."""
    base = short_tmp / "model"
    sample_models.write_image_model(base / "00000123", seed=0)
    monitoring = short_tmp / "monitoring.config"
    monitoring.write_text(f'prometheus_config: {{\n  enable: true,\n  path: "{PROMETHEUS_PATH}"\n}}\n')
    flags = [
        f"--rest_api_port={free_port()}",
        "--rest_api_timeout_in_ms=5000",
        f"--grpc_socket_path={short_tmp / 'tf-serving.sock'}",
        "--model_name=default",
        f"--model_base_path={base}",
        f"--monitoring_config_file={monitoring}",
        f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_RECEIVE},grpc.lb_policy_name=grpclb",
        "--prefer_tflite_model=true",
        "--enable_profiler",
        "--rest_api_num_threads=4",
    ]
    with ServerProcess.start(flags) as server:
        yield server


def test_a_zero_padded_version_folder_is_served_as_its_number(suite_server: ServerProcess) -> None:
    response = _predict(f"127.0.0.1:{suite_server.grpc_port}", _request("default"))
    assert response.model_spec.version.value == 123
    assert response.outputs[COURSE_OUTPUT_NAME].tensor_shape.dim[1].size == 10
    assert any(line.endswith("/00000123") and "loading from" in line for line in suite_server.lines)
    status = httpx.get(f"http://127.0.0.1:{suite_server.rest_port}/v1/models/default", timeout=30).json()
    assert status["model_version_status"][0]["version"] == "123"
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_grpc_answers_on_the_unix_socket(suite_server: ServerProcess, short_tmp: Path) -> None:
    response = _predict(f"unix:{short_tmp / 'tf-serving.sock'}", _request("default"))
    assert response.model_spec.version.value == 123


def test_channel_arguments_reach_the_grpc_server(suite_server: ServerProcess) -> None:
    # 4.3 MB is far below --max_request_bytes (64 MiB): only the channel argument refuses it.
    with pytest.raises(grpc.RpcError) as caught:
        _predict(f"127.0.0.1:{suite_server.grpc_port}", _request("default", images=4))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_prometheus_metrics_at_the_configured_path(suite_server: ServerProcess) -> None:
    _predict(f"127.0.0.1:{suite_server.grpc_port}", _request("default"))
    answer = httpx.get(f"http://127.0.0.1:{suite_server.rest_port}{PROMETHEUS_PATH}", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"} ' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    count = next(
        line for line in text.splitlines()
        if line.startswith(':tensorflow:serving:request_latency_count{model_name="default",API="Predict"')
    )
    assert int(count.rsplit(" ", 1)[1]) >= 1


def test_flags_without_effect_are_announced_in_one_line(suite_server: ServerProcess) -> None:
    announced = [line for line in suite_server.lines if "TF Serving flags accepted without effect" in line]
    assert len(announced) == 1
    for flag in ("--prefer_tflite_model", "--enable_profiler", "--rest_api_num_threads"):
        assert flag in announced[0]
    for implemented in ("--grpc_socket_path", "--grpc_channel_arguments", "--monitoring_config_file"):
        assert implemented not in announced[0]


def test_help_lists_every_tf_serving_flag_and_version_answers() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for flag in (*IGNORED_FLAGS, "grpc_socket_path", "grpc_channel_arguments", "monitoring_config_file",
                 "model_config_file_poll_wait_seconds", "tensorflow_session_parallelism",
                 "enable_grpc_healthcheck_service", "version"):
        assert f"--{flag}" in result.stdout
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("TensorFlow ModelServer: ")
    assert "\nTensorFlow Library: " in version.stdout


def test_an_unknown_flag_is_one_line_and_exit_2() -> None:
    result = _run("--model_base_path=/m", "--not_a_tf_serving_flag=1")
    assert result.returncode == 2
    assert result.stderr == "model_server: error: unrecognized arguments: --not_a_tf_serving_flag=1\n"


def test_a_bad_model_config_is_reported_in_tf_servings_words(tmp_path: Path) -> None:
    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file\n")
    result = _run(f"--model_config_file={config}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"model_server: error: {config}: Error parsing text-format tensorflow.serving.ModelServerConfig: 1:"
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_the_model_config_is_re_read_and_applied(short_tmp: Path) -> None:
    first, second = short_tmp / "first", short_tmp / "second"
    sample_models.write_image_model(first / "1", seed=0)
    sample_models.write_image_model(second / "7", seed=1)
    config = short_tmp / "model_config.txt"

    def write(name: str, base: Path) -> None:
        staging = config.with_suffix(".tmp")
        staging.write_text(
            f'model_config_list: {{ config: {{ name: "{name}", base_path: "{base}", '
            'model_platform: "tensorflow" } }\n'
        )
        staging.replace(config)

    write("first", first)
    flags = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    with ServerProcess.start(flags) as server:
        target = f"127.0.0.1:{server.grpc_port}"
        assert _predict(target, _request("first")).model_spec.version.value == 1
        write("second", second)

        def second_served() -> bool:
            try:
                return _predict(target, _request("second")).model_spec.version.value == 7
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return False

        _wait_for(second_served)
        # The model no longer configured is gone, as in TF Serving.
        with pytest.raises(grpc.RpcError) as caught:
            _predict(target, _request("first"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # A config that stops parsing leaves the models served as they are.
        config.write_text("model_config_list { config { nme: 'x' } }\n")
        _wait_for(lambda: any("model config not reloaded" in line for line in server.lines))
        assert _predict(target, _request("second")).model_spec.version.value == 7
