"""Gateway benchmark: this gateway against the course's and a bare bound, on the course's request.

Starts the local model server (tiny demo model), an image host and each contender in turn as its
own process, and sends `POST /predict {"url": …}` at concurrency 1, 8 and 32: requests/s, p50/p99
latency and CPU per request, next to the floor of the request each contender sends (decoding and
encoding the same image once, timed in this run). docs/benchmarks.md ("Gateway") explains it.

    ./pants bench-gateway -- --requests 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]  # types-psutil is pinned in python-default only
from benchmarks.gateway import bare_gateway, input_forms
from benchmarks.gateway.course_process import start_course_gateway
from PIL import Image

from clothing_preproc import (
    AUTO_SIGNATURE,
    DEFAULT_SIGNATURE,
    PIXELS_SIGNATURE,
    PreprocessConfig,
    array_to_tensor_proto,
    decode_image,
    image_to_array,
    preprocess_input,
)
from clothing_preproc.signature import COURSE_MODEL_NAME
from reliability import hostile_host
from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess, child_environment, python_module
from testing_support.stack import export_demo_model, start_gateway, start_model_server

LEVELS = (1, 8, 32)
# The fixed-cost run: a speck of an image, the same request otherwise.
SPECK_SIZE = (16, 16)


@dataclass(frozen=True)
class Level:
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    errors: int
    # The model server, the image host and the load generator, per request: the rest of the machine.
    others_cpu_ms_per_request: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Floors:
    """CPU ms to turn the image into each kind of request, once, in this process."""

    pixels: float  # decode + resize + uint8 encode: the pixels signature's request
    float32: float  # decode + resize + normalise + float32 encode: serving_default's request

    def of(self, contender: Contender) -> float:
        return self.pixels if contender.sends_pixels else self.float32


@dataclass(frozen=True)
class Run:
    """Every contender's levels with one image host, and this gateway's fixed cost per request."""

    table: dict[str, list[Level]]
    fixed_cpu_ms: float  # CPU per request at 32 with the speck, minus the speck's own floor


def photo(width: int = 1000, height: int = 800) -> bytes:
    """A photo-like JPEG (smooth gradients plus noise), so decoding costs what a real photo costs."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _encode_once(data: bytes, pixels: bool, config: PreprocessConfig) -> float:
    """CPU seconds of decode + resize (+ normalise unless `pixels`) + TensorProto encode of one image,
    as a uint8 pixels or a float32 request needs it."""
    t = time.process_time()
    if pixels:
        array_to_tensor_proto(np.asarray(decode_image(data, config))[None, ...]).SerializeToString()
    else:
        x = preprocess_input(image_to_array(decode_image(data, config))[None, ...], "xception")
        array_to_tensor_proto(x).SerializeToString()
    return time.process_time() - t


def floors(data: bytes, rounds: int = 80) -> Floors:
    """Median CPU ms of each kind of request for `data`; the two are timed in turn, round by round,
    so a slow patch of the machine weighs on both alike."""
    config = PreprocessConfig()
    pixels, float32 = [], []
    for _ in range(rounds):
        pixels.append(_encode_once(data, True, config))
        float32.append(_encode_once(data, False, config))
    return Floors(pixels=statistics.median(pixels) * 1000, float32=statistics.median(float32) * 1000)


def tree_cpu(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def load(url: str, image_url: str, concurrency: int, requests: int) -> tuple[list[float], int, float]:
    """Closed loop: `concurrency` aiohttp clients (the cheapest per request: the load generator
    shares the 2 cores), `requests` in all. Returns the latencies without each client's first
    request, which all start in the same instant and queue behind each other; every request counts
    for requests/s, errors and CPU."""
    latencies: list[float] = []
    ramp_up: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            seen = ramp_up
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                async with client.post(url, json={"url": image_url}) as r:
                    body = await r.read()
                seen.append(time.perf_counter() - t)
                seen = latencies
                if r.status != 200:
                    errors += 1
                    if errors == 1:
                        say(f"first error: {r.status} {body[:200]!r}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies or ramp_up, errors, time.perf_counter() - start


def measure(
    name: str,
    pid: int,
    base_url: str,
    image_url: str,
    requests: int,
    others: Sequence[int],
    levels: Sequence[int] = LEVELS,
) -> list[Level]:
    """Every level against the gateway `pid`; `others` are the model server's and image host's pids."""
    url = f"{base_url}/predict"
    # Warm up (first gRPC connection, first Predict, Python's lazy imports) outside the figures.
    asyncio.run(load(url, image_url, 4, 20))
    results = []
    for c in levels:
        n = max(requests, c * 4)
        cpu0 = tree_cpu(pid)
        others0 = sum(tree_cpu(p) for p in others) + time.process_time()
        latencies, errors, seconds = asyncio.run(load(url, image_url, c, n))
        cpu = tree_cpu(pid) - cpu0
        others_cpu = sum(tree_cpu(p) for p in others) + time.process_time() - others0
        q = np.percentile(np.array(latencies) * 1000, [50, 99])
        level = Level(c, n, seconds, float(q[0]), float(q[1]), cpu * 1000 / n, errors, others_cpu * 1000 / n)
        say(f"{name} c={c}: {level.rps:.1f} req/s p50 {level.p50_ms:.1f} ms p99 {level.p99_ms:.1f} ms "
            f"cpu {level.cpu_ms_per_request:.2f} ms/req errors {errors}")  # fmt: skip
        results.append(level)
    return results


def _this_gateway(tf_serving: str, logs: Path, signature: str = AUTO_SIGNATURE) -> tuple[RunningProcess, str]:
    gateway = start_gateway(tf_serving, logs, {"GATEWAY_SIGNATURE": signature})
    return gateway.process, gateway.url


def _bare_gateway(tf_serving: str, logs: Path, *options: str) -> tuple[RunningProcess, str]:
    port = free_port()
    argv = python_module(
        bare_gateway.__name__, "--port", str(port), "--tf-serving", tf_serving, "--model-name",
        COURSE_MODEL_NAME,
        *options,
    )  # fmt: skip
    process = RunningProcess("bare gateway", argv, child_environment(), logs / f"bare-gateway-{port}.log")
    process.wait_until(lambda: _listening(port), 60, "listening")
    return process, f"http://{LOOPBACK}:{port}"


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Contender:
    start: Callable[[str, Path], tuple[RunningProcess, str]]  # next to the model server: (process, URL)
    sends_pixels: bool  # its request is uint8 pixels (its floor has no normalisation); else float32
    signature: str | None = None  # this gateway's: the signature it must report having called
    answers_like_ours: bool = False  # the bound: its answer must be this gateway's, to the bit


OURS = "this gateway (uvicorn, 1 process)"
OURS_FLOAT32 = "this gateway, told to send float32"
BOUND = "bound: bare asyncio gateway, no checks"
BOUND_FETCHER = "bound + this gateway's fetcher"
BOUND_STARLETTE = "bound + this gateway's fetcher + Starlette"
COURSE_1 = "course, gunicorn sync 1 worker"
COURSE_2 = "course, gunicorn sync 2 workers"
CONTENDERS: dict[str, Contender] = {
    OURS: Contender(_this_gateway, True, PIXELS_SIGNATURE),
    OURS_FLOAT32: Contender(
        lambda tf, logs: _this_gateway(tf, logs, DEFAULT_SIGNATURE), False, DEFAULT_SIGNATURE
    ),
    BOUND: Contender(_bare_gateway, True, answers_like_ours=True),
    BOUND_FETCHER: Contender(
        lambda tf, logs: _bare_gateway(tf, logs, "--fetcher", "gateway"), True, answers_like_ours=True
    ),
    BOUND_STARLETTE: Contender(
        lambda tf, logs: _bare_gateway(tf, logs, "--fetcher", "gateway", "--server", "starlette"),
        True,
        answers_like_ours=True,
    ),
    COURSE_1: Contender(lambda tf, logs: start_course_gateway(tf, logs, workers=1), False),
    COURSE_2: Contender(lambda tf, logs: start_course_gateway(tf, logs, workers=2), False),
}

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gateway-benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    p.add_argument(
        "--image-delays",
        default="0,50",
        help="image host delays before the first byte, ms, comma-separated; one run each (default 0,50)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every contender this many times in turn and report each figure's median (default 1)",
    )
    p.add_argument(
        "--image-host-closes",
        action="store_true",
        help="the image host closes the connection after each image (default: keeps it alive)",
    )
    p.add_argument(
        "--input-forms",
        action="store_true",
        help="instead: the same image as URL, upload, raw body, base64 JSON, TF Serving REST and KServe "
        "v2 against one gateway, CPU per request against the upload's",
    )
    p.add_argument(
        "--concurrency", type=int, default=8, help="with --input-forms: requests in flight (default 8)"
    )
    p.add_argument(
        "--tracing",
        action="store_true",
        help="instead: this gateway with tracing off and on (every request, to an OTLP receiver on "
        "loopback), in turn, at concurrency 1 and 32, and the difference",
    )
    p.add_argument(
        "--decode",
        action="store_true",
        help="instead: this gateway's CPU per image for 1000×800, 4000×3000 and 6000×4000 JPEGs, exact "
        "against ?draft=true in turn (--requests per photo and mode, default 200: 30 is plenty)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= 64:
        p.error("--concurrency must be between 1 and 64")
    if not 1 <= args.requests <= 5000:
        p.error("--requests must be between 1 and 5000 (the run is meant to stay short)")
    if not 1 <= args.rounds <= 9:
        p.error("--rounds must be between 1 and 9")
    try:
        delays = [int(x) for x in args.image_delays.split(",")]
    except ValueError:
        p.error("--image-delays takes whole milliseconds, e.g. 0,50")
    if not delays or not all(0 <= d <= 2000 for d in delays):
        p.error("--image-delays must be between 0 and 2000 ms each")
    if args.tracing:
        # Imported here: tracing_cost measures with this module's functions.
        from benchmarks.gateway import tracing_cost

        print(tracing_cost.run(args.requests, args.rounds))
        return 0
    if args.decode:
        # Imported here: decode_cost measures with this module's functions.
        from benchmarks.gateway import decode_cost

        print(decode_cost.run(args.requests, args.rounds))
        return 0

    runs: dict[int, Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        image = photo()
        (workdir / "photo.jpg").write_bytes(image)
        speck = photo(*SPECK_SIZE)
        (workdir / "speck.jpg").write_bytes(speck)
        if args.input_forms:
            return _input_forms(image, workdir, logs, args.requests, args.concurrency, args.rounds)
        floor = floors(image)
        speck_floor = floors(speck).pixels
        say(f"floors (1000×800 JPEG): {floor.pixels:.2f} ms CPU as pixels, {floor.float32:.2f} ms as float32")
        say("exporting the tiny demo model")
        server = start_model_server(export_demo_model(workdir, "tiny"), logs)
        try:
            for delay in delays:
                say(f"image host delay {delay} ms")
                runs[delay] = run_with_image_host(
                    delay,
                    not args.image_host_closes,
                    workdir,
                    server.grpc_address,
                    server.process.pid,
                    logs,
                    args.requests,
                    speck_floor,
                    args.rounds,
                )
        finally:
            server.process.stop()
        print(report(runs, floor, keep_alive=not args.image_host_closes, rounds=args.rounds))
    return 0


def _input_forms(
    image: bytes, workdir: Path, logs: Path, requests: int, concurrency: int, rounds: int
) -> int:
    say("exporting the tiny demo model")
    server = start_model_server(export_demo_model(workdir, "tiny"), logs)
    try:
        results = input_forms.run(
            image, workdir, server.grpc_address, logs, requests, concurrency, rounds, say, tree_cpu
        )
    finally:
        server.process.stop()
    print(input_forms.report(results, image, concurrency, rounds))
    return 0


def run_with_image_host(
    delay_ms: int,
    keep_alive: bool,
    images: Path,
    tf_serving: str,
    server_pid: int,
    logs: Path,
    requests: int,
    speck_floor: float,
    rounds: int,
) -> Run:
    """Every contender in turn (`rounds` times, each figure the median) against an image host that
    waits `delay_ms`; then this gateway's fixed cost, with the speck."""
    port = free_port()
    argv = python_module(
        # The module object, not its name: the import also tells Pants to pack it into the PEX.
        hostile_host.__name__, "--port", str(port), "--image-delay", str(delay_ms / 1000),
        "--image", f"photo.jpg={images / 'photo.jpg'}", "--image", f"speck.jpg={images / 'speck.jpg'}",
        *(["--keep-alive"] if keep_alive else []),
    )  # fmt: skip
    host = RunningProcess("image host", argv, child_environment(), logs / f"image-host-{delay_ms}.log")
    try:
        image_url = f"http://{LOOPBACK}:{port}/image/photo.jpg"
        host.wait_until(lambda: _fetchable(image_url), 30, "serving the image")
        measured: dict[str, list[list[Level]]] = {name: [] for name in CONTENDERS}
        fixed = []
        others = (server_pid, host.pid)
        ours: object = None  # this gateway's answer to the course's request (it runs first)
        for round_ in range(1, rounds + 1):
            if rounds > 1:
                say(f"round {round_} of {rounds}")
            for name, contender in CONTENDERS.items():
                process, url = contender.start(tf_serving, logs)
                try:
                    if contender.signature is not None:
                        _check_signature(url, image_url, contender.signature)
                    if name == OURS:
                        ours = _answer(url, image_url)
                    elif contender.answers_like_ours and _answer(url, image_url) != ours:
                        raise SystemExit(f"gateway-benchmark: {name} answers otherwise than this gateway")
                    measured[name].append(measure(name, process.pid, url, image_url, requests, others))
                finally:
                    process.stop(30)
            process, url = _this_gateway(tf_serving, logs)
            try:
                speck_url = f"http://{LOOPBACK}:{port}/image/speck.jpg"
                (speck,) = measure("this gateway, 16×16", process.pid, url, speck_url, requests, others, [32])
            finally:
                process.stop(30)
            fixed.append(speck.cpu_ms_per_request - speck_floor)
        table = {
            name: [median_level(same) for same in zip(*per_round, strict=True)]
            for name, per_round in measured.items()
        }
        return Run(table, statistics.median(fixed))
    finally:
        host.stop()


def _check_signature(gateway_url: str, image_url: str, expected: str) -> None:
    """The figures are only meaningful if the gateway calls the signature it is meant to."""
    answer = httpx.post(f"{gateway_url}/v1/classify", json={"url": image_url}, timeout=30).json()
    called = answer.get("model", {}).get("signature")
    if called != expected:
        raise SystemExit(f"gateway-benchmark: the gateway called signature {called!r}, not {expected!r}")


def _answer(gateway_url: str, image_url: str) -> object:
    return httpx.post(f"{gateway_url}/predict", json={"url": image_url}, timeout=30).json()


def _fetchable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def report(runs: dict[int, Run], floor: Floors, keep_alive: bool, rounds: int = 1) -> str:
    """The table of docs/benchmarks.md, then this gateway's figures at 32 that the text quotes."""
    host = "keeps connections alive" if keep_alive else "closes the connection after each image"
    lines = [
        f"Floors (the 1000×800 JPEG decoded, resized and encoded once): {floor.pixels:.2f} ms CPU as "
        f"uint8 pixels (this gateway), {floor.float32:.2f} ms as float32 (the course). The image host "
        f"{host}." + (f" Each figure is the median of {rounds} rounds." if rounds > 1 else ""),
        "",
        "| image host delay | gateway | concurrency | req/s | p50 ms | p99 ms | p99/p50 | CPU ms/req "
        "| × its floor |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    errors = 0
    for delay, run in runs.items():
        for name, levels in run.table.items():
            own = floor.of(CONTENDERS[name])
            for lv in levels:
                errors += lv.errors
                lines.append(
                    f"| {delay} ms | {name} | {lv.concurrency} | {lv.rps:.1f} | {lv.p50_ms:.1f} "
                    f"| {lv.p99_ms:.1f} | {lv.p99_ms / lv.p50_ms:.2f} | {lv.cpu_ms_per_request:.2f} "
                    f"| {lv.cpu_ms_per_request / own:.2f} |"
                )
    lines.append("")
    cores = os.cpu_count() or 1
    for delay, run in runs.items():
        ours, one, two = (_at_32(run, n) for n in (OURS, COURSE_1, COURSE_2))
        ceiling = cores * 1000 / (floor.pixels + ours.others_cpu_ms_per_request)
        lines.append(
            f"At 32, image host {delay} ms: this gateway {ours.rps / one.rps:.2f}× the course's 1 worker, "
            f"{ours.rps / two.rps:.2f}× its 2 workers; its fixed cost {run.fixed_cpu_ms:.2f} ms; the rest "
            f"of the machine {ours.others_cpu_ms_per_request:.2f} ms per request; the ceiling on "
            f"{cores} cores {ceiling:.0f} req/s."
        )
    lines.append(f"Errors: {errors}." if errors else "No errors.")
    return "\n".join(lines)


def median_level(rounds: Sequence[Level]) -> Level:
    """One level's figures over several rounds: each figure's median, the errors summed."""

    def median(figure: Callable[[Level], float]) -> float:
        return statistics.median(figure(lv) for lv in rounds)

    return Level(
        concurrency=rounds[0].concurrency,
        requests=rounds[0].requests,
        seconds=median(lambda lv: lv.seconds),
        p50_ms=median(lambda lv: lv.p50_ms),
        p99_ms=median(lambda lv: lv.p99_ms),
        cpu_ms_per_request=median(lambda lv: lv.cpu_ms_per_request),
        errors=sum(lv.errors for lv in rounds),
        others_cpu_ms_per_request=median(lambda lv: lv.others_cpu_ms_per_request),
    )


def _at_32(run: Run, name: str) -> Level:
    return {lv.concurrency: lv for lv in run.table[name]}[32]


if __name__ == "__main__":
    sys.exit(main())
