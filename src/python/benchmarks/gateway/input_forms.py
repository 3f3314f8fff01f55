"""The same image sent to the gateway in each input form it accepts: requests/s and gateway CPU per
request, next to the multipart upload route as the baseline measured in the same run.

    ./pants bench-gateway -- --input-forms --requests 400

One local model server (tiny demo model), one image host on loopback and one gateway process; the
forms take turns (`--rounds` times, each figure the median), each at one concurrency, so they share
whatever state the machine is in. Every form must answer the same logits, or the run stops.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

from clothing_preproc.signature import COURSE_MODEL_NAME
from reliability import hostile_host
from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess, child_environment, python_module
from testing_support.stack import start_gateway

# One request of a form: (path, body, headers) for the gateway at a given image URL.
Request = tuple[str, bytes, dict[str, str]]
# The CPU seconds a process and its children have used so far, by pid.
CpuSeconds = Callable[[int], float]

UPLOAD = "multipart upload (/v1/classify)"


@dataclass(frozen=True)
class Form:
    name: str
    build: Callable[[bytes, str], Request]  # (image bytes, image URL) -> the request


def _multipart(image: bytes, url: str) -> Request:
    boundary = "benchmarkboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return "/v1/classify", body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def _v2_binary(image: bytes, url: str) -> Request:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": len(image) + 4},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
        }  # fmt: skip
    ).encode()
    body = header + struct.pack("<I", len(image)) + image
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return f"/v2/models/{COURSE_MODEL_NAME}/infer", body, headers


def _json(path: str, body: object) -> Request:
    return path, json.dumps(body).encode(), {"content-type": "application/json"}


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


FORMS = (
    Form("image URL (/v1/classify)", lambda image, url: _json("/v1/classify", {"url": url})),
    Form(UPLOAD, _multipart),
    Form(
        "raw body (/v1/classify)",
        lambda image, url: ("/v1/classify", image, {"content-type": "image/jpeg"}),
    ),
    Form("base64 JSON (/v1/classify)", lambda image, url: _json("/v1/classify", {"b64": _b64(image)})),
    Form(
        "TF Serving REST, b64 (/v1/models/…:predict)",
        lambda image, url: _json(
            f"/v1/models/{COURSE_MODEL_NAME}:predict", {"instances": [{"b64": _b64(image)}]}
        ),
    ),
    Form(
        "KServe v2 infer, JSON base64",
        lambda image, url: _json(
            f"/v2/models/{COURSE_MODEL_NAME}/infer",
            {
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [_b64(image)]}],
                "outputs": [{"name": "logits"}],
            },
        ),
    ),
    Form("KServe v2 infer, binary data", _v2_binary),
)


@dataclass(frozen=True)
class Measured:
    rps: float
    cpu_ms: float  # the gateway's CPU per request
    p50_ms: float
    errors: int


def logits_of(answer: bytes) -> list[float]:
    """The logits in any form's answer (the forms answer in their own protocol's shape)."""
    body = json.loads(answer)
    if "predictions" in body:
        return [float(x) for x in body["predictions"][0]["logits"]]
    if "outputs" in body:
        (logits,) = (o for o in body["outputs"] if o["name"] == "logits")
        return [float(x) for x in logits["data"]]
    return [float(x) for x in body["logits"].values()]


async def _load(
    base: str, request: Request, concurrency: int, requests: int
) -> tuple[list[float], int, float]:
    path, body, headers = request
    query = "?logits=true" if path == "/v1/classify" else ""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    timeout = aiohttp.ClientTimeout(total=60.0)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                async with client.post(f"{base}{path}{query}", data=body, headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t)
                errors += r.status != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def _measure(
    gateway: RunningProcess, cpu_of: CpuSeconds, base: str, request: Request, concurrency: int, requests: int
) -> Measured:
    cpu0 = cpu_of(gateway.pid)
    latencies, errors, seconds = asyncio.run(_load(base, request, concurrency, requests))
    cpu = cpu_of(gateway.pid) - cpu0
    return Measured(requests / seconds, cpu * 1000 / requests, statistics.median(latencies) * 1000, errors)


def run(
    image: bytes,
    workdir: Path,
    tf_serving: str,
    logs: Path,
    requests: int,
    concurrency: int,
    rounds: int,
    say: Callable[[str], None],
    cpu_of: CpuSeconds,
) -> dict[str, Measured]:
    """Every form in turn against one gateway; each figure the median of `rounds`."""
    (workdir / "forms.jpg").write_bytes(image)
    port = free_port()
    argv = python_module(
        hostile_host.__name__, "--port", str(port),
        "--image", f"forms.jpg={workdir / 'forms.jpg'}", "--keep-alive",
    )  # fmt: skip
    host = RunningProcess("image host", argv, child_environment(), logs / "forms-image-host.log")
    # The image host is on loopback: the gateway is told it may fetch from there.
    gateway = start_gateway(tf_serving, logs, {"GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8"})
    try:
        image_url = f"http://{LOOPBACK}:{port}/image/forms.jpg"
        host.wait_until(lambda: httpx.get(image_url, timeout=2).status_code == 200, 30, "serving the image")
        requests_by_form = {form.name: form.build(image, image_url) for form in FORMS}
        reference: list[float] | None = None
        for name, (path, body, headers) in requests_by_form.items():
            query = "?logits=true" if path == "/v1/classify" else ""
            answer = httpx.post(f"{gateway.url}{path}{query}", content=body, headers=headers, timeout=30)
            if answer.status_code != 200:
                raise SystemExit(
                    f"gateway-benchmark: {name} answered {answer.status_code}: {answer.text[:300]}"
                )
            logits = logits_of(answer.content)
            reference = reference or logits
            if [round(x, 5) for x in logits] != [round(x, 5) for x in reference]:
                raise SystemExit(f"gateway-benchmark: {name} answers other logits than the URL form")
            asyncio.run(_load(gateway.url, (path, body, headers), 4, 20))  # warm-up
        per_round: dict[str, list[Measured]] = {name: [] for name in requests_by_form}
        for round_ in range(rounds):
            for name, request in requests_by_form.items():
                m = _measure(gateway.process, cpu_of, gateway.url, request, concurrency, requests)
                say(f"forms round {round_ + 1}: {name}: {m.rps:.1f} req/s, {m.cpu_ms:.2f} ms CPU/req")
                per_round[name].append(m)
        return {
            name: Measured(
                statistics.median(m.rps for m in ms),
                statistics.median(m.cpu_ms for m in ms),
                statistics.median(m.p50_ms for m in ms),
                sum(m.errors for m in ms),
            )
            for name, ms in per_round.items()
        }
    finally:
        gateway.process.stop(30)
        host.stop()


def report(results: dict[str, Measured], image: bytes, concurrency: int, rounds: int) -> str:
    base = results[UPLOAD]
    lines = [
        f"Input forms: one {len(image) / 1024:.0f} KiB 1000×800 JPEG, concurrency {concurrency}, "
        f"median of {rounds} round(s); baseline: the multipart upload",
        "",
        "| form | req/s | p50 ms | gateway CPU ms/req | CPU vs upload | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m.rps:.1f} | {m.p50_ms:.1f} | {m.cpu_ms:.2f} | "
            f"{m.cpu_ms / base.cpu_ms:.2f}× | {m.errors} |"
        )
    return "\n".join(lines)

