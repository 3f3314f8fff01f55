"""Local model server benchmark: Xception throughput with batching off vs on, and tiny-model overhead.

    ./pants run src/python/benchmarks/model_server/throughput.py -- [--seconds 10] [--concurrency 1,8,16]

1. Xception (the clothing model's architecture, random weights; 299×299×3 → 10) served by
   `python -m model_server` in a child process, once without and once with `--enable_batching`;
   for each concurrency, that many client threads send one-image gRPC Predict calls for a fixed
   time. Baseline: batching off at the same concurrency, measured in the same run.
2. The tiny CNN with the same interface: sequential Predict calls through the server against the
   same SavedModel run in this process with the TF1 session the server uses (the baseline); the
   difference is the server's per-request overhead (gRPC, tensor decode/encode, checks).

Bounded: each throughput point runs `--seconds` (default 10), the overhead part `--requests`
calls (default 300). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402 - after the TF log level is set

from clothing_preproc import array_to_tensor_proto  # noqa: E402
from clothing_protos import serving_pb2  # noqa: E402
from model_server import sample_models  # noqa: E402
from model_server.process_support import ServerProcess  # noqa: E402

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _request_bytes(model: str, images: int = 1) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["input_8"].CopyFrom(array_to_tensor_proto(sample_models.random_images(images)))
    return request.SerializeToString()


def _identity(b: bytes) -> bytes:
    return b


def throughput(port: int, payload: bytes, concurrency: int, seconds: float) -> tuple[float, int]:
    """Completed calls per second with `concurrency` closed-loop clients; (rate, errors)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # Pre-serialised request: the client spends no CPU building it on these shared 2 cores.
        call = channel.unary_unary(PREDICT, request_serializer=_identity, response_deserializer=_identity)
        for _ in range(2):  # first calls: connection, TF kernels' first run
            call(payload, timeout=120)
        done = [0] * concurrency
        errors = [0] * concurrency
        start = time.monotonic()
        deadline = start + seconds

        def client(i: int) -> None:
            while time.monotonic() < deadline:
                try:
                    call(payload, timeout=120)
                    done[i] += 1
                except grpc.RpcError:
                    errors[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    return sum(done) / elapsed, sum(errors)


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
    inputs = {"input_8": sample_models.random_images(1)}
    for _ in range(10):
        model.run(signature, inputs, ("dense_7",))
    out = []
    for _ in range(count):
        t = time.perf_counter()
        model.run(signature, inputs, ("dense_7",))
        out.append(time.perf_counter() - t)
    model.close()
    return out


def batch_cost(version_dir: Path, sizes: Sequence[int], repeats: int = 2) -> dict[int, float]:
    """Seconds per image when the signature runs on a batch of each size, in this process.

    The ceiling on what server-side batching can gain: it merges calls into bigger batches, which
    pays only if a bigger batch costs less per image.
    """
    from model_server.saved_model import SavedModel

    model = SavedModel.load(version_dir)
    signature = model.signatures["serving_default"]
    out = {}
    for size in sizes:
        inputs = {"input_8": sample_models.random_images(size)}
        model.run(signature, inputs, ("dense_7",))
        start = time.perf_counter()
        for _ in range(repeats):
            model.run(signature, inputs, ("dense_7",))
        out[size] = (time.perf_counter() - start) / repeats / size
    model.close()
    return out


def _ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput point")
    parser.add_argument("--concurrency", default="1,8,16", help="client concurrencies, comma-separated")
    parser.add_argument("--requests", type=int, default=300, help="sequential calls for the overhead part")
    parser.add_argument("--max_batch_size", type=int, default=16, help="batching: max_batch_size")
    parser.add_argument(
        "--batch_timeout_micros", type=int, default=2000, help="batching: batch_timeout_micros"
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="ms-bench-") as tmp:
        root = Path(tmp)
        print("writing models (Xception, tiny)...", file=sys.stderr, flush=True)
        sample_models.write_xception_model(root / "xception" / "1")
        sample_models.write_image_model(root / "tiny" / "1")
        params = root / "batching.txt"
        params.write_text(
            f"max_batch_size {{ value: {args.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
            "num_batch_threads { value: 1 }\n"
        )
        print("xception: direct runs at batch 1, 4, 8, 16...", file=sys.stderr, flush=True)
        per_image = batch_cost(root / "xception" / "1", (1, 4, 8, 16))
        payload = _request_bytes("xception")
        rates: dict[tuple[bool, int], tuple[float, int]] = {}
        for batching in (False, True):
            flags = ["--model_name", "xception", "--model_base_path", str(root / "xception")]
            if batching:
                flags += ["--batching_parameters_file", str(params)]
            with ServerProcess.start(flags) as server:
                for level in levels:
                    print(
                        f"xception batching={'on' if batching else 'off'} concurrency={level}...",
                        file=sys.stderr,
                        flush=True,
                    )
                    rates[(batching, level)] = throughput(server.grpc_port, payload, level, args.seconds)

        print(
            f"tiny model: {args.requests} sequential calls, server vs direct...", file=sys.stderr, flush=True
        )
        direct = direct_latencies(root / "tiny" / "1", args.requests)
        with ServerProcess.start(["--model_name", "tiny", "--model_base_path", str(root / "tiny")]) as server:
            served = latencies(server.grpc_port, _request_bytes("tiny"), args.requests)

    print("\n| model | concurrency | batching off (req/s) | batching on (req/s) | on / off | errors |")
    print("|---|---|---|---|---|---|")
    for level in levels:
        off, off_err = rates[(False, level)]
        on, on_err = rates[(True, level)]
        print(f"| Xception | {level} | {off:.2f} | {on:.2f} | {on / off:.2f}× | {off_err + on_err} |")
    print("\n| Xception, direct TF1 session run | " + " | ".join(f"batch {n}" for n in per_image) + " |")
    print("|---|" + "---|" * len(per_image))
    print("| ms per image | " + " | ".join(f"{1000 * s:.0f}" for s in per_image.values()) + " |")
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


if __name__ == "__main__":
    raise SystemExit(main())
