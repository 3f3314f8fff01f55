"""What tracing costs: this gateway with tracing off, and with every request traced (sampled at 1.0)
and exported to an OTLP/HTTP receiver on loopback, taking turns in one run on the course's request
(`POST /predict {"url": …}`, the 1000×800 photo on a loopback image host). `--tracing` of the
gateway benchmark; docs/benchmarks.md ("Tracing") shows its table.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
from benchmarks.gateway.throughput import Level, measure, median_level, photo, say

from reliability import hostile_host
from testing_support.otlp_receiver import OtlpReceiver
from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess, child_environment, python_module
from testing_support.stack import export_demo_model, start_gateway, start_model_server

LEVELS = (1, 32)
# measure()'s warm-up requests before each gateway's levels: traced too.
_WARM_UP = 20
OFF = "off"
ON = "on, every request, to a loopback collector"


def run(requests: int, rounds: int, levels: Sequence[int] = LEVELS) -> str:
    """Both configurations, `rounds` times in turn; the report's Markdown."""
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp, OtlpReceiver() as receiver:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        (workdir / "photo.jpg").write_bytes(photo())
        say("exporting the tiny demo model")
        server = start_model_server(export_demo_model(workdir, "tiny"), logs)
        port = free_port()
        argv = python_module(
            hostile_host.__name__, "--port", str(port), "--image-delay", "0",
            "--image", f"photo.jpg={workdir / 'photo.jpg'}", "--keep-alive",
        )  # fmt: skip
        host = RunningProcess("image host", argv, child_environment(), logs / "image-host.log")
        try:
            image_url = f"http://{LOOPBACK}:{port}/image/photo.jpg"
            host.wait_until(lambda: _fetchable(image_url), 30, "serving the image")
            settings = {
                OFF: {},
                ON: {"GATEWAY_OTLP_ENDPOINT": receiver.url, "GATEWAY_TRACE_SAMPLE_RATIO": "1"},
            }
            measured: dict[str, list[list[Level]]] = {name: [] for name in settings}
            others = (server.process.pid, host.pid)
            spans_per_request: list[float] = []
            for round_ in range(1, rounds + 1):
                say(f"round {round_} of {rounds}")
                for name, variables in settings.items():
                    gateway = start_gateway(server.grpc_address, logs, variables)
                    before = len(receiver.spans)
                    try:
                        levels_measured = measure(
                            f"tracing {name}",
                            gateway.process.pid,
                            gateway.url,
                            image_url,
                            requests,
                            others,
                            levels,
                        )
                    finally:
                        # Stopping the gateway exports the spans still queued.
                        gateway.process.stop(30)
                    measured[name].append(levels_measured)
                    if name == ON:
                        sent = _WARM_UP + sum(lv.requests for lv in levels_measured)
                        spans_per_request.append((len(receiver.spans) - before) / sent)
        finally:
            host.stop()
            server.process.stop()
    table = {
        name: [median_level(same) for same in zip(*runs, strict=True)] for name, runs in measured.items()
    }
    return report(table, requests, rounds, statistics.median(spans_per_request))


def report(table: dict[str, list[Level]], requests: int, rounds: int, spans_per_request: float) -> str:
    lines = [
        f"Tracing off against on (sampled at 1.0, exported as OTLP over HTTP to a receiver on loopback "
        f"that decodes every span), {requests} requests per level, each figure the median of {rounds} "
        f"rounds; the receiver got {spans_per_request:.2f} spans per request.",
        "",
        "| concurrency | tracing | req/s | p50 ms | p99 ms | CPU ms/req |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for off, on in zip(table[OFF], table[ON], strict=True):
        for name, lv in ((OFF, off), (ON, on)):
            lines.append(
                f"| {lv.concurrency} | {name} | {lv.rps:.1f} | {lv.p50_ms:.1f} | {lv.p99_ms:.1f} "
                f"| {lv.cpu_ms_per_request:.2f} |"
            )
        lines.append(
            f"| {on.concurrency} | on − off | {_change(on.rps, off.rps)} | {_change(on.p50_ms, off.p50_ms)} "
            f"| {_change(on.p99_ms, off.p99_ms)} | {on.cpu_ms_per_request - off.cpu_ms_per_request:+.2f} "
            f"({_percent(on.cpu_ms_per_request, off.cpu_ms_per_request)}) |"
        )
    errors = sum(lv.errors for levels in table.values() for lv in levels)
    lines.append("")
    lines.append(f"Errors: {errors}." if errors else "No errors.")
    return "\n".join(lines)


def _change(on: float, off: float) -> str:
    return f"{on - off:+.1f} ({_percent(on, off)})"


def _percent(on: float, off: float) -> str:
    return f"{(on - off) / off * 100:+.1f} %"


def _fetchable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
