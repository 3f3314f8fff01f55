"""Whole-stack benchmark: model server + gateway as an operator runs them, next to the course's stack.

For each demo model (tiny, Xception) one run measures, on this machine and in this order:

1. cold start: both processes spawned at once, seconds until the first `POST /predict` answers 200;
2. this project's gateway, then the course's gateway (Flask + keras-image-helper under gunicorn,
   one sync worker, as the course runs it), each in front of the same model server: the course's
   request `POST /predict {"url": …}` for `--seconds` at each concurrency (closed loop):
   requests/s, p50/p95/p99, errors, peak RSS of the gateway and of the model server;
3. the gateway's own per-stage latency (fetch, queue, decode, preprocess, predict; mean ms from its
   /metrics) at each concurrency.

The image (a 1000×800 photo-like JPEG) is served on loopback by a separate process that keeps
connections alive, as HTTP/1.1 hosts do (the course's urllib closes its own). Everything runs on
loopback; the load generator shares the machine's cores with the stack, as it says. Latency
percentiles leave out each client's first request (they all start in the same instant, a ramp-up);
requests/s and errors count every request.

    ./pants run src/python/benchmarks/stack:stack -- --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchmarks.gateway.course_process import start_course_gateway

from reliability import hostile_host
from reliability.images import sample_jpeg
from reliability.load import LoadResult, client_for, closed_loop
from reliability.memory import MemorySampler, MiB
from reliability.traffic import predict_url
from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess, child_environment, python_module
from testing_support.stack import (
    ExportedModel,
    ModelServer,
    export_demo_model,
    start_gateway,
    start_model_server,
    wait_for,
)

STAGES = ("fetch", "queue", "decode", "preprocess", "predict")


@dataclass(frozen=True)
class Row:
    model: str
    gateway: str
    concurrency: int
    result: LoadResult
    gateway_rss_mib: float
    server_rss_mib: float
    stages_ms: dict[str, float]


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def stage_totals(metrics_text: str) -> dict[str, tuple[float, float]]:
    """stage -> (sum of seconds, count) from the gateway's Prometheus text."""
    out: dict[str, tuple[float, float]] = {}
    for stage in STAGES:
        total = re.search(
            rf'gateway_stage_duration_seconds_sum{{stage="{stage}"}} ([0-9.e+-]+)', metrics_text
        )
        count = re.search(
            rf'gateway_stage_duration_seconds_count{{stage="{stage}"}} ([0-9.e+-]+)', metrics_text
        )
        out[stage] = (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)
    return out


def measure(
    model: str,
    name: str,
    url: str,
    image_url: str,
    gateway_rss: Callable[[], int],
    server: ModelServer,
    levels: Sequence[int],
    seconds: float,
    with_stages: bool,
) -> list[Row]:
    rows = []
    for concurrency in levels:
        before = stage_totals(httpx.get(f"{url}/metrics").text) if with_stages else {}
        sampler = MemorySampler({"gateway": gateway_rss, "server": server.process.rss}, interval=0.5)

        async def run(c: int = concurrency, sampler: MemorySampler = sampler) -> LoadResult:
            async with client_for(url, c, timeout=120) as client:
                # A short warm-up per level: connections opened, threads started.
                await closed_loop(client, predict_url(image_url), concurrency=c, requests=c, hang_after=120)
                with sampler:
                    return await closed_loop(
                        client, predict_url(image_url), concurrency=c, duration=seconds, hang_after=120
                    )

        result = asyncio.run(run())
        stages: dict[str, float] = {}
        if with_stages:
            after = stage_totals(httpx.get(f"{url}/metrics").text)
            for stage in STAGES:
                total = after[stage][0] - before[stage][0]
                count = after[stage][1] - before[stage][1]
                stages[stage] = total / count * 1000 if count else float("nan")
        peaks = {k: max(v) / MiB for k, v in sampler.samples.items()}
        rows.append(Row(model, name, concurrency, result, peaks["gateway"], peaks["server"], stages))
        say(f"{model} {name} c={concurrency}: {result.summary()}")
    return rows


def cold_start(model: ExportedModel, logs: Path, image_url: str) -> tuple[float, float]:
    """(seconds to the model AVAILABLE, seconds to the first 200 from /predict), both from spawn."""
    t0 = time.monotonic()
    server = start_model_server(model, logs, wait=False)
    gateway = start_gateway(server.grpc_address, logs, wait_ready=False, timeout=120)
    try:
        assert wait_for(server.available, 300, 0.05), server.process.log_tail()
        available = time.monotonic() - t0

        def predicts() -> bool:
            try:
                return (
                    httpx.post(f"{gateway.url}/predict", json={"url": image_url}, timeout=30).status_code
                    == 200
                )
            except httpx.HTTPError:
                return False

        assert wait_for(predicts, 300, 0.05), gateway.process.log_tail()
        return available, time.monotonic() - t0
    finally:
        gateway.process.stop()
        server.process.stop()


def table(rows: list[Row], colds: dict[str, tuple[float, float]]) -> str:
    lines = [
        "| model | gateway | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors | gateway RSS MiB "
        "| model server RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        errors = r.result.count - r.result.ok
        steady = r.result.steady_state()  # percentiles without the ramp-up; rates count everything
        lines.append(
            f"| {r.model} | {r.gateway} | {r.concurrency} | {r.result.throughput:.1f} | "
            f"{steady.p(50) * 1000:.0f} | {steady.p(95) * 1000:.0f} | {steady.p(99) * 1000:.0f} | "
            f"{errors} | {r.gateway_rss_mib:.0f} | {r.server_rss_mib:.0f} |"
        )
    lines += [
        "",
        "| model | concurrency | " + " | ".join(f"{s} ms" for s in STAGES) + " |",
        "|---|---:|" + "---:|" * len(STAGES),
    ]
    for r in rows:
        if r.stages_ms:
            cells = " | ".join(f"{r.stages_ms[s]:.1f}" for s in STAGES)
            lines.append(f"| {r.model} | {r.concurrency} | {cells} |")
    lines += [
        "",
        "| model | cold start: model AVAILABLE s | cold start: first prediction s |",
        "|---|---:|---:|",
    ]
    for model, (available, first) in colds.items():
        lines.append(f"| {model} | {available:.1f} | {first:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.stack", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny,xception", help="demo models, comma-separated (default: both)")
    p.add_argument("--concurrency", default="1,8,32", help="closed-loop levels (default: 1,8,32)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level (default: 10)")
    p.add_argument("--workdir", type=Path, help="where exports and logs go (default: a temporary folder)")
    p.add_argument("--no-baseline", action="store_true", help="skip the course's gateway")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    if not 1 <= args.seconds <= 600 or not all(1 <= c <= 256 for c in levels):
        p.error("--seconds must be 1-600 and each concurrency 1-256 (the run is meant to stay bounded)")
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        workdir = args.workdir or Path(tmp)
        logs = workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        photo = workdir / "photo.jpg"
        photo.write_bytes(sample_jpeg(1000, 800, seed=7))
        host_port = free_port()
        host = RunningProcess(
            "image host",
            # The module object, not its name: the import also tells Pants to pack it into the PEX.
            python_module(
                hostile_host.__name__,
                "--port",
                str(host_port),
                "--image",
                f"photo.jpg={photo}",
                "--keep-alive",
            ),
            child_environment(),
            logs / "image-host.log",
        )
        image_url = f"http://{LOOPBACK}:{host_port}/image/photo.jpg"
        rows: list[Row] = []
        colds: dict[str, tuple[float, float]] = {}
        try:
            for kind in args.models.split(","):
                say(f"exporting the {kind} demo model")
                model = export_demo_model(workdir, kind)
                say(f"{kind}: cold start")
                colds[kind] = cold_start(model, logs, image_url)
                server = start_model_server(model, logs)
                try:
                    gateway = start_gateway(server.grpc_address, logs, {"GATEWAY_MAX_CONCURRENCY": "256"})
                    try:
                        rows += measure(
                            kind, "this gateway", gateway.url, image_url, gateway.process.rss, server,
                            levels, args.seconds, with_stages=True,
                        )  # fmt: skip
                    finally:
                        gateway.process.stop()
                    if not args.no_baseline:
                        course, course_url = start_course_gateway(server.grpc_address, logs)
                        try:
                            rows += measure(
                                kind, "course (Flask+gunicorn, 1 sync worker)", course_url, image_url,
                                course.rss, server, levels, args.seconds, with_stages=False,
                            )  # fmt: skip
                        finally:
                            course.stop()
                finally:
                    server.process.stop()
        finally:
            host.stop()
        print(table(rows, colds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
