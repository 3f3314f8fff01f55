"""Gateway benchmark: this project's gateway vs the course's (Flask + gunicorn sync), same everything.

One run starts the local model server (tiny demo model), an image host (`reliability.hostile_host`
in its own process) serving one photo-sized JPEG, and each gateway in turn as its own process; then
sends the course's request (`POST /predict {"url": …}`) at concurrency 1, 8 and 32, a fixed number
of requests per level. Reported per level: requests/s, p50/p99 latency (steady state: each client's
first request left out, see `load`), and the gateway's CPU time per request (its process tree,
from psutil), next to its floor: decoding, resizing and encoding the same image once into the
request that gateway sends, measured in this process in the same run. This gateway sends uint8
pixels to the export's `pixels` signature, so its floor has no normalisation and a quarter of the
bytes; the course sends float32, so its floor normalises and encodes 1 MB. This gateway also runs
once more told to send float32 (`GATEWAY_SIGNATURE=serving_default`), which shows what the pixels
signature saves. The CPU the rest of the machine spends per request (model server, image host,
this load generator) is measured too: with the floor it bounds the requests/s any gateway could
reach on these cores, printed as a ceiling.
A bound runs beside them (`bare_gateway`): the same request served with nothing but the I/O, the
decode threads and the gRPC call every gateway built like this one needs, so the report can say
how far such a gateway can get on these cores, next to the floor's ceiling, which counts no I/O.
And this gateway's fixed cost per request (HTTP, fetch, gRPC, metrics, thread hand-offs) is
measured apart, with a 16×16 image whose decoding costs next to nothing, so the report can say how
much of its CPU is the photo and how much is the request.

The whole run is repeated for each image-host delay (`--image-delays`, ms before the image's first
byte): 0 is a host on the same machine, where every contender is bound by the 2 shared cores; a few
tens of ms is an image on the internet, the course's case, where a sync worker waits idle.

The image host keeps connections alive, as HTTP/1.1 hosts (object stores, CDNs) do: this gateway's
fetcher reuses them; the course's urllib asks for `Connection: close` on every image, so it opens a
new one each time either way. `--image-host-closes` makes the host close after every answer (the
setting of the runs before session 5).

`--rounds N` repeats every contender's turn N times and reports each figure's median: the steps
from the bound to this gateway differ by about a tenth of a millisecond, less than one run's noise.

    ./pants run src/python/benchmarks/gateway:throughput -- --requests 200 --rounds 3
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
from benchmarks.gateway import bare_gateway
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
from reliability.stack import export_demo_model, start_gateway, start_model_server

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
    """Closed loop: `concurrency` clients, `requests` in all. aiohttp, the cheapest async client per
    request, because the load generator takes its CPU from the same 2 cores as the contenders.

    Returns the latencies of the steady state: every request but each client's first. The first
    ones all start in the same instant and queue behind each other, a ramp-up whose slowest
    requests would otherwise be the p99 of a short level (at 32 clients and 200 requests the first
    round is a sixth of them; with 1000 requests p99/p50 fell from 1.54-1.66 to 1.41 for the same
    gateway). Every request counts towards requests/s, errors and CPU.
    """
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
# The ladder in the report: contender -> what its step puts back.
LADDER = {
    BOUND: "the bound",
    BOUND_FETCHER: "+ this gateway's fetcher (aiohttp, address checks, limits, timeouts)",
    BOUND_STARLETTE: "+ Starlette under uvicorn",
    OURS: "= this gateway (+ middleware, metrics, admission and work slots, error mapping)",
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
    args = p.parse_args(argv)
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

    runs: dict[int, Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        image = photo()
        (workdir / "photo.jpg").write_bytes(image)
        speck = photo(*SPECK_SIZE)
        (workdir / "speck.jpg").write_bytes(speck)
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
    """Every contender in turn, fetching the image from a host that waits `delay_ms` first (and
    keeps connections alive or not); then this gateway's fixed cost, with the speck from the same
    host. With several `rounds` the whole turn is repeated, so a slow patch of the machine falls on
    every contender alike, and each figure is the median over the rounds."""
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
    lines = [
        "Floors, the same 1000×800 JPEG decoded, resized and encoded once: "
        f"{floor.pixels:.2f} ms CPU as uint8 pixels (this gateway's request), "
        f"{floor.float32:.2f} ms normalised and encoded as float32 (the course's). "
        "Each contender's CPU is held against the floor of the request it sends. "
        + (
            "The image host keeps connections alive (the course's urllib closes its own)."
            if keep_alive
            else "The image host closes the connection after each image."
        )
        + (f" Each figure is the median of {rounds} rounds, contenders taking turns." if rounds > 1 else ""),
        "",
        "| image host delay | gateway | concurrency | requests | req/s | p50 ms | p99 ms | p99/p50 "
        "| CPU ms/req | × its floor | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for delay, run in runs.items():
        for name, levels in run.table.items():
            own = floor.of(CONTENDERS[name])
            for lv in levels:
                lines.append(
                    f"| {delay} ms | {name} | {lv.concurrency} | {lv.requests} | {lv.rps:.1f} "
                    f"| {lv.p50_ms:.1f} | {lv.p99_ms:.1f} | {lv.p99_ms / lv.p50_ms:.2f} "
                    f"| {lv.cpu_ms_per_request:.2f} | {lv.cpu_ms_per_request / own:.2f} | {lv.errors} |"
                )
    lines += ["", "Targets at concurrency 32 (this gateway; CPU also against the float32 floor):", ""]
    lines += ["| image host delay | vs course 1 worker (≥ 2.5×) | vs course 2 workers (≥ 1.3×) "
              "| p99/p50 (≤ 1.5) | CPU × its floor (≤ 1.3) | CPU × float32 floor "
              "| sending float32: req/s, CPU × its floor |",
              "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for delay, run in runs.items():
        ours, as_float, one, two = (_at_32(run, n) for n in (OURS, OURS_FLOAT32, COURSE_1, COURSE_2))
        lines.append(
            f"| {delay} ms | {ours.rps / one.rps:.2f}× | {ours.rps / two.rps:.2f}× "
            f"| {ours.p99_ms / ours.p50_ms:.2f} | {ours.cpu_ms_per_request / floor.pixels:.2f} "
            f"| {ours.cpu_ms_per_request / floor.float32:.2f} "
            f"| {as_float.rps:.0f} ({as_float.rps / two.rps:.2f}× course 2 workers), "
            f"{as_float.cpu_ms_per_request / floor.float32:.2f} |"
        )
    lines += ["", "This gateway's CPU per request at 32, split: the fixed cost is measured with a 16×16 "
              "image (its CPU per request minus that image's own floor); the photo's floor plus it is "
              "the least a photo's request can cost (the floor is timed with the decoder's caches warm, "
              "one image after another):", "",
              "| image host delay | floor ms | fixed cost ms | floor + fixed cost, × floor "
              "| measured, × floor |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for delay, run in runs.items():
        ours = _at_32(run, OURS)
        lines.append(
            f"| {delay} ms | {floor.pixels:.2f} | {run.fixed_cpu_ms:.2f} "
            f"| {(floor.pixels + run.fixed_cpu_ms) / floor.pixels:.2f} "
            f"| {ours.cpu_ms_per_request / floor.pixels:.2f} |"
        )
    lines += ["", "From the bound to this gateway at 32. The bound is the least a gateway built like this "
              "one spends on this request here: plain asyncio HTTP in and out, a hand-written kept-alive "
              "GET, the same decode threads and gRPC call, none of the checks, limits or metrics. Each "
              "step puts back a part of this gateway:", "",
              "| image host delay | step | req/s | vs course 1 worker | vs course 2 workers | CPU ms/req "
              "| × floor | CPU added by the step |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for delay, run in runs.items():
        one, two = _at_32(run, COURSE_1), _at_32(run, COURSE_2)
        before = None
        for name, step in LADDER.items():
            lv = _at_32(run, name)
            added = "" if before is None else f"{lv.cpu_ms_per_request - before:+.2f} ms"
            lines.append(
                f"| {delay} ms | {step} | {lv.rps:.1f} | {lv.rps / one.rps:.2f}× | {lv.rps / two.rps:.2f}× "
                f"| {lv.cpu_ms_per_request:.2f} | {lv.cpu_ms_per_request / floor.pixels:.2f} | {added} |"
            )
            before = lv.cpu_ms_per_request
    cores = os.cpu_count() or 1
    lines += ["", f"Ceiling at 32 on these {cores} cores: a gateway costing only the floor, next to the rest "
              "of the machine's CPU per request as measured with this gateway:", "",
              "| image host delay | rest of the machine, CPU ms/req | ceiling req/s | vs course 1 worker "
              "| vs course 2 workers |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for delay, run in runs.items():
        ours, one, two = (_at_32(run, n) for n in (OURS, COURSE_1, COURSE_2))
        ceiling = ceiling_rps(cores, floor.pixels, ours.others_cpu_ms_per_request)
        lines.append(
            f"| {delay} ms | {ours.others_cpu_ms_per_request:.2f} | {ceiling:.0f} "
            f"| {ceiling / one.rps:.2f}× | {ceiling / two.rps:.2f}× |"
        )
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


def ceiling_rps(cores: int, floor_ms: float, others_ms: float) -> float:
    """Requests/s when every core is busy and each request costs the floor plus the rest's CPU.

    An upper bound while CPU-bound: it counts no gateway overhead at all, and no idle core.
    """
    return cores * 1000 / (floor_ms + others_ms)


if __name__ == "__main__":
    sys.exit(main())
