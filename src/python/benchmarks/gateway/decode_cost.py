"""What draft decoding saves: this gateway's CPU per image for phone-size JPEGs, exact (Keras' path,
the baseline) against `?draft=true`, taking turns in one run against one gateway process.
`--decode` of the gateway benchmark; docs/benchmarks.md ("Draft decoding") shows its table.

Each photo is sent as a raw body to `POST /v1/classify`, one request at a time over a kept-alive
connection, so the gateway's CPU (its process tree, user + system) over a batch of requests is that
photo's cost: receiving the bytes, decoding, resizing, the Predict call and the answer. Beside it,
the same decode alone in this process (`clothing_preproc.decode_image`, best CPU time of a few):
what the gateway adds per request is the difference, and it stays the same in both modes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx
from benchmarks.gateway.throughput import say, tree_cpu

from clothing_preproc import PreprocessConfig, decode_image
from testing_support.sample_images import photo_jpeg
from testing_support.stack import export_demo_model, start_gateway, start_model_server

# Width × height: a small upload, a 12-megapixel phone photo, a 24-megapixel one.
SIZES = ((1000, 800), (4000, 3000), (6000, 4000))
QUALITY = 90
MODES = {"exact": "false", "draft": "true"}
# The target: draft at least this much cheaper on the phone photos.
TARGET = 2.5
_WARM_UP = 3


def run(requests: int, rounds: int) -> str:
    """Every photo, exact and draft in turn, `rounds` times; the report's Markdown."""
    photos = {size: photo_jpeg(*size, seed=1, quality=QUALITY) for size in SIZES}
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        say("exporting the tiny demo model")
        server = start_model_server(export_demo_model(workdir, "tiny"), logs)
        try:
            # One gateway for both modes: draft allowed per request, exact by default.
            gateway = start_gateway(server.grpc_address, logs, {"GATEWAY_REQUEST_OPTIONS": "all"})
            try:
                cpu: dict[tuple[tuple[int, int], str], list[float]] = {}
                with httpx.Client(base_url=gateway.url, timeout=120) as client:
                    for round_ in range(1, rounds + 1):
                        say(f"round {round_} of {rounds}")
                        for size, data in photos.items():
                            for mode, flag in MODES.items():
                                per_image = _measure(client, gateway.process.pid, data, flag, requests)
                                cpu.setdefault((size, mode), []).append(per_image)
                                say(f"{size[0]}×{size[1]} {mode}: {per_image:.1f} ms CPU per image")
            finally:
                gateway.process.stop(30)
        finally:
            server.process.stop()
    alone = {
        (size, mode): decode_alone(data, mode == "draft") for size, data in photos.items() for mode in MODES
    }
    return report(photos, cpu, alone, requests, rounds)


def decode_alone(data: bytes, draft: bool, rounds: int = 7) -> float:
    """Best CPU ms of `clothing_preproc.decode_image` on `data`, in this thread."""
    config = PreprocessConfig(draft=draft)
    best = float("inf")
    for _ in range(rounds):
        t = time.thread_time()
        decode_image(data, config)
        best = min(best, time.thread_time() - t)
    return best * 1000


def _measure(client: httpx.Client, pid: int, data: bytes, draft: str, requests: int) -> float:
    """The gateway's CPU ms per image over `requests` requests."""
    for _ in range(_WARM_UP):
        _classify(client, data, draft)
    before = tree_cpu(pid)
    for _ in range(requests):
        _classify(client, data, draft)
    return (tree_cpu(pid) - before) * 1000 / requests


def _classify(client: httpx.Client, data: bytes, draft: str) -> None:
    r = client.post(f"/v1/classify?draft={draft}", content=data, headers={"content-type": "image/jpeg"})
    if r.status_code != 200:
        raise SystemExit(f"gateway-benchmark: the gateway answered {r.status_code}: {r.text[:200]}")
    body = r.json()
    # The figures mean something only if the answer was shaped as asked.
    if body["preprocessing"]["draft"] is not (draft == "true"):
        raise SystemExit(f"gateway-benchmark: asked draft={draft}, the answer says {body['preprocessing']}")


def report(
    photos: dict[tuple[int, int], bytes],
    cpu: dict[tuple[tuple[int, int], str], list[float]],
    alone: dict[tuple[tuple[int, int], str], float],
    requests: int,
    rounds: int,
) -> str:
    lines = [
        f"Gateway CPU per image, {requests} requests per photo and mode, one at a time, median of "
        f"{rounds} round(s); decode alone: clothing_preproc.decode_image in the benchmark process, best "
        "CPU time of 7.",
        "",
        "| photo | JPEG | exact: gateway CPU ms/image | draft: gateway CPU ms/image | exact ÷ draft "
        "| decode alone, exact ms | decode alone, draft ms | the rest of a request ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for size, data in photos.items():
        exact, draft = (statistics.median(cpu[(size, mode)]) for mode in MODES)
        exact_alone, draft_alone = (alone[(size, mode)] for mode in MODES)
        # What a request costs besides its decode (HTTP in and out, the Predict call), both modes.
        rest = statistics.mean([exact - exact_alone, draft - draft_alone])
        lines.append(
            f"| {size[0]}×{size[1]} | {len(data) / 1024 / 1024:.1f} MiB | {exact:.1f} | {draft:.1f} "
            f"| {exact / draft:.2f}× | {exact_alone:.1f} | {draft_alone:.1f} | {rest:.1f} |"
        )
        if size != SIZES[0]:
            met = "met" if exact / draft >= TARGET else "MISSED"
            verdicts.append(f"{size[0]}×{size[1]}: {exact / draft:.2f}× ({met})")
    lines += ["", f"Target: draft at least {TARGET}× cheaper on the phone photos: {'; '.join(verdicts)}."]
    return "\n".join(lines)
