"""Local model server benchmark: Xception throughput with batching off vs on, and tiny-model overhead.

    ./pants bench-model-server -- [--seconds 10] [--concurrency 1,8,16]

1. Xception's cost per image when the signature runs on a batch of 1, 2, 4, 8, 16 in one TF1
   session, as the server runs it: wall time and this process's CPU time per image. The CPU time
   is the ceiling on what batching can gain, and unlike wall time it barely moves when other jobs
   share the cores.
2. Xception (the clothing model's architecture, random weights; 299×299×3 → 10) served by
   `python -m model_server` in a child process, batching off and on (`--batching_parameters_file`,
   default: the example file shipped with the server). For each concurrency, off and on run back
   to back, each in a fresh server: that many client threads send one-image gRPC Predict calls,
   first `--warmup` seconds unmeasured (every batch size's first run is slow), then `--seconds`
   measured. Baseline: batching off at the same concurrency in the same run. Per point: requests
   per second, the server process's CPU time per request, the mean batch the server ran (from
   its log) and the load average.
3. The tiny CNN with the same interface: sequential Predict calls through the server against the
   same SavedModel run in this process with the TF1 session the server uses (the baseline); the
   difference is the server's per-request overhead (gRPC, tensor decode/encode, checks).

Bounded: each throughput point runs `--warmup` + `--seconds` (default 3 + 10) plus a server start,
the overhead part `--requests` calls (default 300). Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tensorflow_noise import import_tensorflow_quietly

import_tensorflow_quietly()  # before sample_models imports it

import grpc  # noqa: E402

from clothing_preproc import array_to_tensor_proto  # noqa: E402
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME  # noqa: E402
from clothing_protos import serving_pb2  # noqa: E402
from testing_support import sample_models  # noqa: E402
from testing_support.model_server_process import ServerProcess  # noqa: E402
from testing_support.processes import proc_stat  # noqa: E402

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _request_bytes(model: str, images: int = 1) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(sample_models.random_images(images)))
    return request.SerializeToString()


def _identity(b: bytes) -> bytes:
    return b


@dataclass(frozen=True)
class Point:
    rate: float  # completed calls per second
    errors: int
    cpu_ms: float  # server process CPU time (user + system) per completed call
    mean_batch: float | None  # callers' rows per model run; None with batching off
    load: float  # 1-minute load average at the end of the point


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (utime and stime, /proc/<pid>/stat fields 14 and 15),
    all its threads."""
    fields = proc_stat(pid)
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / os.sysconf("SC_CLK_TCK")


MEAN_BATCH = re.compile(r"batching \S+: \d+ batches, \d+ rows \(mean ([0-9.]+) per batch\)")


def throughput(
    server: ServerProcess, payload: bytes, concurrency: int, warmup: float, seconds: float
) -> Point:
    """`concurrency` closed-loop clients; `warmup` seconds unmeasured, then `seconds` measured."""
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        # Pre-serialised request: the client spends no CPU building it on these shared 2 cores.
        call = channel.unary_unary(PREDICT, request_serializer=_identity, response_deserializer=_identity)
        call(payload, timeout=120)  # connection, TF kernels' first run
        done = [0] * concurrency
        errors = [0] * concurrency
        measuring = threading.Event()
        stop = threading.Event()

        def client(i: int) -> None:
            while not stop.is_set():
                try:
                    call(payload, timeout=120)
                    ok = True
                except grpc.RpcError:
                    ok = False
                if measuring.is_set():
                    done[i] += ok
                    errors[i] += not ok

        threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        time.sleep(warmup)
        cpu = process_cpu_seconds(server.process.pid)
        start = time.monotonic()
        measuring.set()
        time.sleep(seconds)
        measuring.clear()
        elapsed = time.monotonic() - start
        cpu = process_cpu_seconds(server.process.pid) - cpu
        stop.set()
        for t in threads:
            t.join()
    load = os.getloadavg()[0]
    calls = sum(done)
    return Point(calls / elapsed, sum(errors), 1000 * cpu / max(calls, 1), None, load)


def latencies(port: int, payload: bytes, count: int) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(PREDICT, request_serializer=_identity, response_deserializer=_identity)
        for _ in range(10):
            call(payload, timeout=60)
        out = []
        for _ in range(count):
            t = time.perf_counter()
            call(payload, timeout=60)
            out.append(time.perf_counter() - t)
    return out


def direct_latencies(version_dir: Path, count: int) -> list[float]:
    """The baseline: the same signature run in this process, as the server runs it (TF1 session)."""
    from model_server.saved_model import SavedModel

    model = SavedModel.load(version_dir)
    signature = model.signatures["serving_default"]
    inputs = {COURSE_INPUT_NAME: sample_models.random_images(1)}
    for _ in range(10):
        model.run(signature, inputs, (COURSE_OUTPUT_NAME,))
    out = []
    for _ in range(count):
        t = time.perf_counter()
        model.run(signature, inputs, (COURSE_OUTPUT_NAME,))
        out.append(time.perf_counter() - t)
    model.close()
    return out


def batch_cost(version_dir: Path, sizes: Sequence[int], repeats: int = 3) -> dict[int, tuple[float, float]]:
    """(wall, CPU) seconds per image when the signature runs on a batch of each size, in this process.

    The ceiling on what server-side batching can gain: it merges calls into bigger batches, which
    pays only if a bigger batch costs less per image. Wall: the fastest of `repeats` runs (the
    least disturbed by other jobs); CPU: this process's user + system time over the same runs.
    """
    from model_server.saved_model import SavedModel

    model = SavedModel.load(version_dir)
    signature = model.signatures["serving_default"]
    out = {}
    for size in sizes:
        inputs = {COURSE_INPUT_NAME: sample_models.random_images(size)}
        model.run(signature, inputs, (COURSE_OUTPUT_NAME,))  # first run of a shape: oneDNN builds kernels
        walls = []
        cpu = time.process_time()
        for _ in range(repeats):
            start = time.perf_counter()
            model.run(signature, inputs, (COURSE_OUTPUT_NAME,))
            walls.append(time.perf_counter() - start)
        out[size] = (min(walls) / size, (time.process_time() - cpu) / repeats / size)
    model.close()
    return out


def _ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model-server-benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per throughput point")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured load before each point")
    parser.add_argument("--concurrency", default="1,8,16", help="client concurrencies, comma-separated")
    parser.add_argument("--requests", type=int, default=300, help="sequential calls for the overhead part")
    parser.add_argument(
        "--batching_parameters_file",
        type=Path,
        default=None,
        help="batching on: this file (default: the example shipped with model_server)",
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="ms-bench-") as tmp:
        root = Path(tmp)
        print("writing models (Xception, tiny)...", file=sys.stderr, flush=True)
        sample_models.write_xception_model(root / "xception" / "1")
        sample_models.write_image_model(root / "tiny" / "1")
        params = root / "batching.txt"
        if args.batching_parameters_file is not None:
            params.write_text(args.batching_parameters_file.read_text())
        else:
            params.write_text(resources.files("model_server").joinpath("batching_parameters.txt").read_text())
        load_start = os.getloadavg()
        print("xception: direct runs at batch 1, 2, 4, 8, 16...", file=sys.stderr, flush=True)
        per_image = batch_cost(root / "xception" / "1", (1, 2, 4, 8, 16))
        payload = _request_bytes("xception")
        points: dict[tuple[bool, int], Point] = {}
        for level in levels:
            for batching in (False, True):
                flags = ["--model_name", "xception", "--model_base_path", str(root / "xception")]
                if batching:
                    flags += ["--batching_parameters_file", str(params)]
                print(
                    f"xception batching={'on' if batching else 'off'} concurrency={level}...",
                    file=sys.stderr,
                    flush=True,
                )
                with ServerProcess.start(flags) as server:
                    point = throughput(server, payload, level, args.warmup, args.seconds)
                found = MEAN_BATCH.search(server.log())
                if found:
                    point = Point(point.rate, point.errors, point.cpu_ms, float(found.group(1)), point.load)
                points[(batching, level)] = point

        print(
            f"tiny model: {args.requests} sequential calls, server vs direct...", file=sys.stderr, flush=True
        )
        direct = direct_latencies(root / "tiny" / "1", args.requests)
        with ServerProcess.start(["--model_name", "tiny", "--model_base_path", str(root / "tiny")]) as server:
            served = latencies(server.grpc_port, _request_bytes("tiny"), args.requests)
        load_end = os.getloadavg()
        batching_text = " ".join(
            kept for kept in (line.split("#")[0].strip() for line in params.read_text().splitlines()) if kept
        )

    print(f"\nload average (1, 5, 15 min): start {_load(load_start)}, end {_load(load_end)}")
    print(f"batching parameters: {batching_text}")
    print("\n| Xception, direct TF1 session run | " + " | ".join(f"batch {n}" for n in per_image) + " |")
    print("|---|" + "---|" * len(per_image))
    walls = " | ".join(f"{1000 * w:.0f}" for w, _ in per_image.values())
    print(f"| wall ms per image (fastest of 3) | {walls} |")
    print("| CPU ms per image | " + " | ".join(f"{1000 * c:.0f}" for _, c in per_image.values()) + " |")
    # When unbatched calls already keep every core busy, batching can only win what a batch saves in
    # CPU per image: that ratio is the ceiling for "on / off" at high concurrency on this machine.
    single = per_image[min(per_image)][1]
    best = min(c for _, c in per_image.values())
    print(
        f"\nCeiling for batching once the cores are saturated: CPU per image at batch 1 / at the "
        f"cheapest batch = {single / best:.2f}× (target at concurrency 16: ≥ 1.30×)."
    )
    print(
        "\n| concurrency | off (req/s) | on (req/s) | on / off | off CPU ms/req | on CPU ms/req "
        "| on mean batch | errors | load (off, on) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for level in levels:
        off, on = points[(False, level)], points[(True, level)]
        batch = f"{on.mean_batch:.1f}" if on.mean_batch is not None else "?"
        print(
            f"| {level} | {off.rate:.2f} | {on.rate:.2f} | {on.rate / off.rate:.2f}× | {off.cpu_ms:.0f} "
            f"| {on.cpu_ms:.0f} | {batch} | {off.errors + on.errors} | {off.load:.1f}, {on.load:.1f} |"
        )
    print("\n| tiny model, 1 image | p50 (ms) | p90 (ms) | mean (ms) |")
    print("|---|---|---|---|")
    print(
        f"| direct TF1 session run (baseline) | {_ms(direct, .5):.2f} | {_ms(direct, .9):.2f} | "
        f"{1000 * statistics.fmean(direct):.2f} |"
    )
    print(
        f"| gRPC Predict through the server | {_ms(served, .5):.2f} | {_ms(served, .9):.2f} | "
        f"{1000 * statistics.fmean(served):.2f} |"
    )
    print(
        f"| server overhead (difference) | {_ms(served, .5) - _ms(direct, .5):.2f} | | "
        f"{1000 * (statistics.fmean(served) - statistics.fmean(direct)):.2f} |"
    )
    return 0


def _load(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    raise SystemExit(main())
