"""Versions come and go on disk: hot swap without failed requests, failed loads, retries, policies."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from model_server.errors import InvalidArgument, NotFound
from model_server.model_manager import State
from model_server.server import ModelServer
from testing_support import sample_models

Copy = Callable[[str, int, int], Path]


def _wait_for(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _states(server: ModelServer, name: str = "m") -> dict[int, State]:
    try:
        return {s.version: s.state for s in server.manager.status(name)}
    except NotFound:
        return {}


def test_version_2_replaces_version_1_under_load_without_a_failed_request(
    start_server: Callable[..., ModelServer], model_copy: Copy, model_store: Path
) -> None:
    base = model_copy("tiny", 1, 1).parent
    server = start_server(
        "--model_name", "m", "--model_base_path", str(base), "--file_system_poll_wait_seconds", "0.1"
    )
    images = sample_models.random_images(1, seed=11)
    reference = {
        v: sample_models.run_saved_model(model_store / "tiny" / str(v), {COURSE_INPUT_NAME: images})[
            COURSE_OUTPUT_NAME
        ]
        for v in (1, 2)
    }
    stop = threading.Event()
    answers: list[int] = []
    failures: list[str] = []

    def hammer() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = serving_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(images))
            while not stop.is_set():
                try:
                    response = stub.Predict(request, timeout=60)
                except grpc.RpcError as e:
                    failures.append(f"{e.code().name}: {e.details()}")
                    continue
                version = response.model_spec.version.value
                # Each answer is exactly the output of the version that says it answered.
                answered = tensor_proto_to_array(response.outputs[COURSE_OUTPUT_NAME])
                if not np.array_equal(answered, reference[version]):
                    failures.append(f"version {version} gave another version's output")
                answers.append(version)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: len(answers) >= 20)
        model_copy("tiny", 2, 2)
        _wait_for(lambda: _states(server) == {1: State.END, 2: State.AVAILABLE})
        seen = len(answers)
        _wait_for(lambda: len(answers) >= seen + 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert answers[0] == 1
    assert answers[-1] == 2
    # Once version 2 answered, version 1 never did again (the swap is one-way).
    assert 1 not in answers[answers.index(2) + 4 * 2 :]


def test_a_broken_new_version_leaves_the_old_one_serving_and_is_retried_when_fixed(
    start_server: Callable[..., ModelServer], model_copy: Copy, model_store: Path
) -> None:
    base = model_copy("tiny", 1, 1).parent
    server = start_server(
        "--model_name", "m", "--model_base_path", str(base), "--file_system_poll_wait_seconds", "0.1"
    )
    shutil.copytree(model_store / "plain" / "1", base / "2")  # the export TF Serving cannot run
    _wait_for(lambda: _states(server).get(2) == State.END)
    (status,) = server.manager.status("m", 2)
    assert status.error_code.name == "FAILED_PRECONDITION"
    assert "Could not find variable" in status.error_message
    assert _states(server)[1] == State.AVAILABLE
    with server.manager.servable("m") as servable:
        assert servable.version == 1
    # Replacing the folder's files with a good export: tried again, and it takes over.
    shutil.rmtree(base / "2")
    model_copy("tiny", 2, 2)
    _wait_for(lambda: _states(server) == {1: State.END, 2: State.AVAILABLE})


def test_removing_every_version_unloads_the_model(
    start_server: Callable[..., ModelServer], model_copy: Copy
) -> None:
    version = model_copy("tiny", 1, 1)
    server = start_server(
        "--model_name",
        "m",
        "--model_base_path",
        str(version.parent),
        "--file_system_poll_wait_seconds",
        "0.1",
    )
    shutil.rmtree(version)
    _wait_for(lambda: _states(server) == {1: State.END})
    with (
        pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(m\)$"),
        server.manager.servable("m"),
    ):
        pass


def test_warmup_records_are_replayed_and_bad_ones_fail_the_load(
    start_server: Callable[..., ModelServer], model_copy: Copy, tmp_path: Path
) -> None:
    good = model_copy("tiny", 1, 1)
    sample_models.write_warmup(good, [{COURSE_INPUT_NAME: sample_models.random_images(1)}], "m")
    server = start_server(
        "--model_name", "m", "--model_base_path", str(good.parent), "--file_system_poll_wait_seconds", "0.1"
    )
    assert _states(server) == {1: State.AVAILABLE}
    bad = model_copy("tiny", 2, 2)
    # A warmup record the signature rejects (rank 3): the version must not become AVAILABLE.
    sample_models.write_warmup(bad, [{COURSE_INPUT_NAME: sample_models.random_images(1)[0]}], "m")
    _wait_for(lambda: _states(server).get(2) == State.END)
    (status,) = server.manager.status("m", 2)
    assert status.error_code.name == "INVALID_ARGUMENT"
    assert status.error_message.startswith(f"input tensor {COURSE_INPUT_NAME} has shape [299,299,3]")
    assert _states(server)[1] == State.AVAILABLE


def _examples_log(kind: str, signature: str, x: float) -> serving_pb2.PredictionLog:
    log = serving_pb2.PredictionLog()
    if kind == "multi_inference_log":
        request = log.multi_inference_log.request
        for name, method in ((signature, "tensorflow/serving/regress"),
                             ("classify_x_to_y", "tensorflow/serving/classify")):
            task = request.tasks.add(method_name=method)
            task.model_spec.name = "m"
            task.model_spec.signature_name = name
    else:
        request = getattr(log, kind).request
        request.model_spec.name = "m"
        request.model_spec.signature_name = signature
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return log


def test_classify_regress_and_multi_inference_warmup_records_are_replayed(
    start_server: Callable[..., ModelServer], tmp_path: Path
) -> None:
    good = sample_models.write_half_plus_two(tmp_path / "m" / "1")
    sample_models.write_warmup_logs(good, [
        _examples_log("classify_log", "classify_x_to_y", 1.0),
        _examples_log("regress_log", "regress_x_to_y", 1.0),
        _examples_log("multi_inference_log", "regress_x_to_y2", 1.0),
    ])
    server = start_server(
        "--model_name", "m", "--model_base_path", str(good.parent), "--file_system_poll_wait_seconds", "0.1"
    )
    assert _states(server) == {1: State.AVAILABLE}
    # A record TF Serving's Classify would refuse fails the load, so the records are really run.
    bad = sample_models.write_half_plus_two(tmp_path / "staging" / "2")
    sample_models.write_warmup_logs(bad, [_examples_log("classify_log", "regress_x_to_y", 1.0)])
    bad.rename(tmp_path / "m" / "2")
    _wait_for(lambda: _states(server).get(2) == State.END)
    (status,) = server.manager.status("m", 2)
    assert status.error_code.name == "INVALID_ARGUMENT"
    assert status.error_message.startswith(
        "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\""
    )
    assert _states(server)[1] == State.AVAILABLE


def test_removing_the_newest_version_rolls_back_to_the_previous_one(
    start_server: Callable[..., ModelServer], model_copy: Copy
) -> None:
    base = model_copy("tiny", 1, 1).parent
    server = start_server(
        "--model_name", "m", "--model_base_path", str(base), "--file_system_poll_wait_seconds", "0.1"
    )
    newest = model_copy("tiny", 2, 2)
    _wait_for(lambda: _states(server) == {1: State.END, 2: State.AVAILABLE})
    shutil.rmtree(newest)
    _wait_for(lambda: _states(server) == {1: State.AVAILABLE, 2: State.END})
    with server.manager.servable("m") as servable:
        assert servable.version == 1


def _served_by(server: ModelServer, label: str) -> int:
    with server.manager.servable("m", label=label) as servable:
        return servable.version


def test_a_canary_rollout_moves_labels_as_tf_serving_allows(
    start_server: Callable[..., ModelServer], model_copy: Copy, tmp_path: Path
) -> None:
    base = model_copy("tiny", 1, 1).parent
    model_copy("tiny", 2, 2)
    config = tmp_path / "models.config"

    def write(versions: list[int], **labels: int) -> None:
        staging = tmp_path / "models.tmp"
        staging.write_text(
            f"model_config_list {{ config {{ name: 'm' base_path: '{base}' "
            + "model_version_policy { specific { "
            + " ".join(f"versions: {v}" for v in versions) + " } } "
            + " ".join(f"version_labels {{ key: '{k}' value: {v} }}" for k, v in labels.items())
            + " } }\n"
        )
        staging.replace(config)

    def polled() -> None:  # several config polls (0.2 s each) and file-system polls (0.1 s)
        time.sleep(1.0)

    write([1], stable=1, canary=1)
    server = start_server(
        "--model_config_file", str(config), "--model_config_file_poll_wait_seconds", "0.2",
        "--file_system_poll_wait_seconds", "0.1", "--allow_version_labels_for_unavailable_models",
    )  # fmt: skip
    assert _states(server) == {1: State.AVAILABLE}
    assert (_served_by(server, "stable"), _served_by(server, "canary")) == (1, 1)

    # Loading version 2 and moving the canary label onto it in one config: TF Serving refuses the
    # whole config (the label names a version not AVAILABLE), so version 2 does not even load.
    write([1, 2], stable=1, canary=2)
    polled()
    assert _states(server) == {1: State.AVAILABLE}
    assert _served_by(server, "canary") == 1

    # Two steps: load version 2, then move the label once it is AVAILABLE.
    write([1, 2], stable=1, canary=1)
    _wait_for(lambda: _states(server) == {1: State.AVAILABLE, 2: State.AVAILABLE})
    write([1, 2], stable=1, canary=2)
    _wait_for(lambda: _served_by(server, "canary") == 2)
    assert _served_by(server, "stable") == 1

    # Rollback: the canary label back on 1 and version 2 unloaded, in one config (1 is AVAILABLE).
    write([1], stable=1, canary=1)
    _wait_for(lambda: _states(server) == {1: State.AVAILABLE, 2: State.END})
    assert (_served_by(server, "stable"), _served_by(server, "canary")) == (1, 1)

    # Canary again, then promote: both labels on 2 and version 1 unloaded.
    write([1, 2], stable=1, canary=1)
    _wait_for(lambda: _states(server) == {1: State.AVAILABLE, 2: State.AVAILABLE})
    write([1, 2], stable=1, canary=2)
    _wait_for(lambda: _served_by(server, "canary") == 2)
    write([2], stable=2, canary=2)
    _wait_for(lambda: _states(server) == {1: State.END, 2: State.AVAILABLE})
    assert (_served_by(server, "stable"), _served_by(server, "canary")) == (2, 2)
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: beta"):
        _served_by(server, "beta")


@pytest.mark.parametrize("allowed", [False, True])
def test_a_new_label_may_name_a_version_still_loading_only_with_the_flag(
    start_server: Callable[..., ModelServer], model_copy: Copy, tmp_path: Path, allowed: bool
) -> None:
    base = model_copy("tiny", 1, 1).parent
    config = tmp_path / "models.config"

    def write(text: str) -> None:
        staging = tmp_path / "models.tmp"
        staging.write_text(f"model_config_list {{ config {{ name: 'm' base_path: '{base}' {text} }} }}\n")
        staging.replace(config)

    write("model_version_policy { specific { versions: 1 } }")
    flags = ["--allow_version_labels_for_unavailable_models"] if allowed else []
    server = start_server(
        "--model_config_file", str(config), "--model_config_file_poll_wait_seconds", "0.2", *flags
    )
    # A new label on version 3, which is not on disk: refused, unless the flag allows it.
    write("model_version_policy { specific { versions: 1 } } version_labels { key: 'beta' value: 3 }")
    if allowed:
        _wait_for(lambda: server.manager.configs()[0].version_labels == {"beta": 3})
        with pytest.raises(NotFound, match=r"Servable not found for request: Specific\(m, 3\)"):
            _served_by(server, "beta")
    else:
        time.sleep(1.0)
        assert server.manager.configs()[0].version_labels == {}
        with pytest.raises(InvalidArgument, match="Unrecognized servable version label: beta"):
            _served_by(server, "beta")


def test_a_zero_padded_version_folder_loads_from_its_own_name(
    start_server: Callable[..., ModelServer], model_store: Path, tmp_path: Path
) -> None:
    shutil.copytree(model_store / "tiny" / "1", tmp_path / "m" / "00000123")
    server = start_server("--model_name", "m", "--model_base_path", str(tmp_path / "m"))
    assert _states(server) == {123: State.AVAILABLE}
    with server.manager.servable("m", 123) as servable:
        assert servable.version == 123
