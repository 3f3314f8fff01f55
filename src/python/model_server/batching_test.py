"""Server-side batching: merged runs give each caller its own rows, bounded queue, TF Serving's errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from model_server.batching import Batcher, BatchStats
from model_server.config_files import BatchingParameters, load_batching_parameters
from model_server.errors import InvalidArgument, Unavailable
from model_server.server import ModelServer
from testing_support import sample_models


class RecordingModel:
    """A real (numpy) model: y = 2x per row, remembering the batch sizes it was run with."""

    def __init__(self, gated: bool = False) -> None:
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()  # runs wait here until it is set
        if not gated:
            self.gate.set()
        self.entered = threading.Event()  # set when a run starts (and waits at the gate)

    def __call__(self, inputs: Mapping[str, npt.NDArray[Any]], fetch: Sequence[str]) -> dict[str, Any]:
        self.entered.set()
        self.gate.wait()
        self.batch_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


def test_concurrent_tasks_are_merged_and_split_back() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher(
        model, BatchingParameters(max_batch_size=8, num_batch_threads=1, allowed_batch_sizes=(4, 8)), "t"
    )
    try:
        with ThreadPoolExecutor(6) as pool:
            # The first task occupies the only batch thread (gated); the next five queue up.
            first = pool.submit(batcher.submit, {"x": np.full((1, 2), 100.0)}, ("y",))
            assert model.entered.wait(30)
            rest = [pool.submit(batcher.submit, {"x": np.full((1, 2), float(i))}, ("y",)) for i in range(5)]
            while batcher.queued_rows < 5:  # all five queued before the gate opens
                threading.Event().wait(0.01)
            model.gate.set()
            assert first.result()["y"].tolist() == [[200.0, 200.0]]
            assert [f.result()["y"].tolist() for f in rest] == [[[2.0 * i] * 2] for i in range(5)]
    finally:
        batcher.close()
    # One run for the first task (padded to 4), one for the five others merged (padded to 8).
    assert sorted(model.batch_sizes) == [4, 8]


def test_a_full_queue_is_refused_with_tf_servings_message() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher(
        model, BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1), "t"
    )
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(batcher.submit, {"x": np.ones((1, 2))}, ("y",))
            assert model.entered.wait(30)
            queued = pool.submit(batcher.submit, {"x": np.ones((1, 2))}, ("y",))
            while batcher.queued_rows < 1:
                threading.Event().wait(0.01)
            full = "^The batch scheduling queue to which this task was submitted is full$"
            with pytest.raises(Unavailable, match=full):
                batcher.submit({"x": np.ones((1, 2))}, ("y",))
            model.gate.set()
            assert running.result()["y"].shape == queued.result()["y"].shape == (1, 2)
    finally:
        model.gate.set()
        batcher.close()


def test_tasks_the_batch_cannot_hold_are_refused() -> None:
    batcher = Batcher(RecordingModel(), BatchingParameters(max_batch_size=2, num_batch_threads=1), "t")
    try:
        with pytest.raises(InvalidArgument, match="^Task size 3 is larger than maximum input batch size 2$"):
            batcher.submit({"x": np.ones((3, 2))}, ("y",))
        with pytest.raises(InvalidArgument, match="must have equal 0th-dimension size"):
            batcher.submit({"x": np.ones((1, 2)), "z": np.ones((2, 2))}, ("y",))
    finally:
        batcher.close()


def test_batched_server_results_equal_unbatched(
    start_server: Callable[..., ModelServer], model_store: Path, tmp_path: Path
) -> None:
    params = tmp_path / "batching.txt"
    params.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 20000 }\n"
        "num_batch_threads { value: 1 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
    )
    base = ["--model_name", "tiny", "--model_base_path", str(model_store / "tiny")]
    plain = start_server(*base)
    batched = start_server(*base, "--batching_parameters_file", str(params))
    images = [sample_models.random_images(1 + i % 3, seed=i) for i in range(24)]

    def predict(port: int, array: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = serving_pb2.PredictRequest()
            request.model_spec.name = "tiny"
            request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(array))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            return tensor_proto_to_array(stub.Predict(request, timeout=60).outputs[COURSE_OUTPUT_NAME])

    with ThreadPoolExecutor(12) as pool:
        expected = list(pool.map(lambda a: predict(plain.grpc_port, a), images))
        got = list(pool.map(lambda a: predict(batched.grpc_port, a), images))
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape
        # A batch is computed by other kernels than a single example (oneDNN blocking): equal to
        # float32 rounding, measured max difference ~1e-7 on these logits.
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


def test_a_batch_waits_for_its_own_timeout_not_an_earlier_tasks() -> None:
    # Two batch threads: one takes the full batch [a, b], the other had started waiting for `a`'s
    # timeout. `c` arrives later and must get its own full timeout to find company (`d`), instead
    # of being sent alone when `a`'s deadline passes.
    model = RecordingModel()
    timeout = 4.0
    batcher = Batcher(
        model,
        BatchingParameters(max_batch_size=2, batch_timeout_micros=int(timeout * 1e6), num_batch_threads=2),
        "t",
    )
    try:
        with ThreadPoolExecutor(4) as pool:
            first = [pool.submit(batcher.submit, {"x": np.full((1, 1), i)}, ("y",)) for i in (1.0, 2.0)]
            for future in first:
                future.result()
            time.sleep(timeout / 2)
            c = pool.submit(batcher.submit, {"x": np.full((1, 1), 3.0)}, ("y",))
            time.sleep(timeout * 3 / 4)  # past `a`'s deadline, before `c`'s
            d = pool.submit(batcher.submit, {"x": np.full((1, 1), 4.0)}, ("y",))
            assert [c.result()["y"].item(), d.result()["y"].item()] == [6.0, 8.0]
    finally:
        batcher.close()
    assert model.batch_sizes == [2, 2]
    assert batcher.stats == BatchStats(batches=2, rows=4, padding_rows=0)


def test_the_example_parameters_file_loads(tmp_path: Path) -> None:
    # The file ships next to the server (README "Batching"); it must stay valid for both servers.
    text = resources.files("model_server").joinpath("batching_parameters.txt").read_text()
    path = tmp_path / "batching_parameters.txt"
    path.write_text(text)
    assert load_batching_parameters(path) == BatchingParameters(
        max_batch_size=8, batch_timeout_micros=5000, max_enqueued_batches=8, num_batch_threads=2
    )
