"""Gateway benchmark: this project's gateway vs the course's (Flask + gunicorn sync), same everything.

One run starts the local model server (tiny demo model), an image host (`reliability.hostile_host`
in its own process) serving one photo-sized JPEG, and each gateway in turn as its own process; then
sends the course's request (`POST /predict {"url": …}`) at concurrency 1, 8 and 32, a fixed number
of requests per level. Reported per level: requests/s, p50/p99 latency, and the gateway's CPU time
per request (its process tree, from psutil), next to the floor: decoding, resizing, normalising and
encoding the same image once, measured in this process in the same run.

The whole run is repeated for each image-host delay (`--image-delays`, ms before the image's first
byte): 0 is a host on the same machine, where every contender is bound by the 2 shared cores; a few
tens of ms is an image on the internet, the course's case, where a sync worker waits idle.

    ./pants run src/python/benchmarks/gateway:throughput -- --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]  # types-psutil is pinned in python-default only
from PIL import Image

from clothing_preproc import (
    PreprocessConfig,
    array_to_tensor_proto,
    decode_image,
    image_to_array,
    preprocess_input,
)
from local_stack.supervisor.children import Child, child_environment
from local_stack.supervisor.model_dir import ensure_demo_model
from local_stack.supervisor.settings import default_cache_dir
from local_stack.supervisor.stack import port_free
from reliability import hostile_host

LEVELS = (1, 8, 32)


@dataclass(frozen=True)
class Level:
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photo(width: int = 1000, height: int = 800) -> bytes:
    """A photo-like JPEG (smooth gradients plus noise), so decoding costs what a real photo costs."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def floor_cpu_ms(data: bytes, rounds: int = 60) -> float:
    """Median CPU time of decode + resize + normalise + TensorProto encode of one image."""
    config = PreprocessConfig()
    samples = []
    for _ in range(rounds):
        t = time.process_time()
        x = preprocess_input(image_to_array(decode_image(data, config))[None, ...], "xception")
        array_to_tensor_proto(x).SerializeToString()
        samples.append(time.process_time() - t)
    return statistics.median(samples) * 1000


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
    request, because the load generator takes its CPU from the same 2 cores as the contenders."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                async with client.post(url, json={"url": image_url}) as r:
                    body = await r.read()
                latencies.append(time.perf_counter() - t)
                if r.status != 200:
                    errors += 1
                    if errors == 1:
                        say(f"first error: {r.status} {body[:200]!r}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def wait_http(url: str, child: Child, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exit_code() is not None:
            raise SystemExit(f"bench: {child.name} exited while starting")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench: {child.name} not up after {timeout:g} s")


def wait_available(url: str, child: Child, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exit_code() is not None:
            raise SystemExit(f"bench: {child.name} exited while starting")
        try:
            if '"AVAILABLE"' in httpx.get(url, timeout=2.0).text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench: {child.name} not serving the model after {timeout:g} s")


def measure(name: str, child: Child, port: int, image_url: str, requests: int) -> list[Level]:
    url = f"http://127.0.0.1:{port}/predict"
    # Warm up (first gRPC connection, first Predict, Python's lazy imports) outside the figures.
    asyncio.run(load(url, image_url, 4, 20))
    results = []
    for c in LEVELS:
        n = max(requests, c * 4)
        cpu0 = tree_cpu(child.pid)
        latencies, errors, seconds = asyncio.run(load(url, image_url, c, n))
        cpu = tree_cpu(child.pid) - cpu0
        q = np.percentile(np.array(latencies) * 1000, [50, 99])
        level = Level(c, n, seconds, float(q[0]), float(q[1]), cpu * 1000 / n, errors)
        say(f"{name} c={c}: {level.rps:.1f} req/s p50 {level.p50_ms:.1f} ms p99 {level.p99_ms:.1f} ms "
            f"cpu {level.cpu_ms_per_request:.2f} ms/req errors {errors}")  # fmt: skip
        results.append(level)
    return results


CONTENDERS: dict[str, tuple[str, list[str]]] = {
    # name -> (module run with `python -m`, its extra arguments)
    "this gateway (uvicorn, 1 process)": ("gateway", []),
    "course, gunicorn sync 1 worker": ("gunicorn", ["--workers", "1"]),
    "course, gunicorn sync 2 workers": ("gunicorn", ["--workers", "2"]),
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
        "--cache-dir",
        type=Path,
        default=default_cache_dir(os.environ),
        help="where the demo model is exported",
    )
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 5000:
        p.error("--requests must be between 1 and 5000 (the run is meant to stay short)")
    try:
        delays = [int(x) for x in args.image_delays.split(",")]
    except ValueError:
        p.error("--image-delays takes whole milliseconds, e.g. 0,50")
    if not delays or not all(0 <= d <= 2000 for d in delays):
        p.error("--image-delays must be between 0 and 2000 ms each")

    children: list[Child] = []
    runs: dict[int, dict[str, list[Level]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = ensure_demo_model(args.cache_dir / "models", "clothing-model", say)
            image = photo()
            image_file = Path(tmp) / "photo.jpg"
            image_file.write_bytes(image)
            floor = floor_cpu_ms(image)
            say(f"floor (decode + resize + normalise + encode, 1000×800 JPEG): {floor:.2f} ms CPU")

            grpc_port, rest_port = free_port(), free_port()
            server = Child(
                "model server",
                "model_server",
                [f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1",
                 "--model_name=clothing-model", f"--model_base_path={model_dir}"],
                child_environment({}),
            )  # fmt: skip
            children.append(server)
            wait_available(f"http://127.0.0.1:{rest_port}/v1/models/clothing-model", server)
            for delay in delays:
                image_port = free_port()
                host_args = ["--port", str(image_port), "--image", f"photo.jpg={image_file}",
                             "--image-delay", str(delay / 1000)]  # fmt: skip
                # The module object, not its name: the import also tells Pants to pack it.
                host = Child("image host", hostile_host.__name__, host_args, child_environment({}))
                children.append(host)
                image_url = f"http://127.0.0.1:{image_port}/image/photo.jpg"
                wait_http(image_url, host)
                say(f"image host delay {delay} ms")
                runs[delay] = {
                    name: run_contender(name, module, extra, grpc_port, image_url, args.requests, children)
                    for name, (module, extra) in CONTENDERS.items()
                }
                host.stop(15)
                children.remove(host)
            print(report(runs, floor))
    finally:
        for child in reversed(children):
            child.stop(15)
    return 0


def run_contender(
    name: str,
    module: str,
    extra: list[str],
    grpc_port: int,
    image_url: str,
    requests: int,
    children: list[Child],
) -> list[Level]:
    port = free_port()
    assert port_free("127.0.0.1", port)
    env = child_environment(
        {
            "TF_SERVING_HOST": f"127.0.0.1:{grpc_port}",
            "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
            "GATEWAY_LOG_LEVEL": "warning",
        }
    )
    if module == "gunicorn":
        argv = [*extra, "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                "benchmarks.gateway.course_gateway:app"]  # fmt: skip
    else:
        argv = []
    child = Child(name, module, argv, env)
    children.append(child)
    try:
        wait_http(f"http://127.0.0.1:{port}/predict", child)
        return measure(name, child, port, image_url, requests)
    finally:
        child.stop(30)
        children.remove(child)


def report(runs: dict[int, dict[str, list[Level]]], floor: float) -> str:
    lines = [
        f"Floor (decode + resize + normalise + encode of the same 1000×800 JPEG): {floor:.2f} ms CPU.",
        "",
        "| image host delay | gateway | concurrency | requests | req/s | p50 ms | p99 ms | p99/p50 "
        "| CPU ms/req | × floor | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for delay, table in runs.items():
        for name, levels in table.items():
            for lv in levels:
                lines.append(
                    f"| {delay} ms | {name} | {lv.concurrency} | {lv.requests} | {lv.rps:.1f} "
                    f"| {lv.p50_ms:.1f} | {lv.p99_ms:.1f} | {lv.p99_ms / lv.p50_ms:.2f} "
                    f"| {lv.cpu_ms_per_request:.2f} | {lv.cpu_ms_per_request / floor:.2f} | {lv.errors} |"
                )
    lines += ["", "Targets at concurrency 32 (this gateway):", ""]
    lines += ["| image host delay | vs course 1 worker (≥ 2.5×) | vs course 2 workers (≥ 1.3×) "
              "| p99/p50 (≤ 1.5) | CPU × floor (≤ 1.3) |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
    names = list(CONTENDERS)
    for delay, table in runs.items():
        ours, one, two = ({lv.concurrency: lv for lv in table[n]}[32] for n in names)
        lines.append(
            f"| {delay} ms | {ours.rps / one.rps:.2f}× | {ours.rps / two.rps:.2f}× "
            f"| {ours.p99_ms / ours.p50_ms:.2f} | {ours.cpu_ms_per_request / floor:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
