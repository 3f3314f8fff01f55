"""The gateway's edge against its own schema and against oversized or malformed input, as processes.

One gateway process in front of the real model server (tiny demo model):

- schemathesis (its CLI, packaged from the python-default resolve as `:schemathesis`) generates
  requests from the gateway's /openapi.json, a bounded number per operation, and checks every
  answer: no 5xx, status codes, content types, headers and bodies as the schema says, and
  schema-invalid requests refused. Generated image URLs are pointed at the image host here (a
  hooks file), so URL requests get real answers instead of DNS failures in a closed network;
  hostile URLs are fuzz_test.py's job.
- deep JSON, integers over Python's 4,300-digit limit, a 300 MB multipart upload, and a batch with
  bad images among good ones: the documented refusals, no 5xx, no hang, no traceback in the log,
  and the gateway's RSS growth.

Figures go to `RELIABILITY edge-*` lines (docs/reliability.md, "Edge cases").
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from reliability.backend import Backend
from reliability.hostile_host import HostileImageHost
from reliability.memory import MemorySampler
from reliability.report import record
from reliability.scale import current
from testing_support.stack import Gateway, GatewayFactory

# Pants puts the packaged CLI here (runtime_package_dependencies in BUILD).
SCHEMATHESIS_PEX = Path("src.python.reliability/schemathesis.pex")
EXAMPLES = int(os.environ.get("RELIABILITY_SCHEMA_EXAMPLES", "300" if current().name == "full" else "40"))
HANG_AFTER = 30.0
ROUTES = ["/predict", "/v1/classify", "/v1/classify/batch"]

_HOOKS = '''
import itertools
import schemathesis

PATHS = itertools.cycle(["/image/photo.jpg", "/image/small.png", "/image/notes.txt"])


def _point(value):
    if isinstance(value, str) and value.split(":", 1)[0].lower() in ("http", "https"):
        return "{base}" + next(PATHS)
    return value


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # Every phase (coverage included) sends through here, after generation.
    body = case.body
    if isinstance(body, dict):
        if "url" in body:
            case.body = body = {{**body, "url": _point(body["url"])}}
        if isinstance(body.get("urls"), list):
            case.body = {{**body, "urls": [_point(u) for u in body["urls"]]}}
'''


@pytest.fixture(scope="module")
def images(image_host: HostileImageHost) -> HostileImageHost:
    image_host.put("notes.txt", b"just some text", "text/plain")
    return image_host


@pytest.fixture()
def gateway(start_gateway_for: GatewayFactory, healthy_backend: Backend) -> Gateway:
    return start_gateway_for(healthy_backend.address, {"GATEWAY_FETCH_READ_TIMEOUT": "3"})


def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(
    gateway: Gateway, images: HostileImageHost, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks.py"
    hooks.write_text(_HOOKS.format(base=images.url("").rstrip("/")))
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEX")}
    env["SCHEMATHESIS_HOOKS"] = str(hooks)
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            str(SCHEMATHESIS_PEX.resolve()),
            "run",
            f"{gateway.url}/openapi.json",
            f"--checks={','.join(checks)}",
            f"--max-examples={EXAMPLES}",
            "--seed=17",
            "--workers=1",
            "--phases=examples,coverage,fuzzing",
            f"--request-timeout={HANG_AFTER:g}",
            "--suppress-health-check=all",
            "--no-color",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    tail = output[-6000:]
    cases = re.search(r"(\d+) generated", output)
    record(
        "edge-schemathesis",
        {
            "examples_per_operation": EXAMPLES,
            "test_cases": int(cases.group(1)) if cases else None,
            "exit": run.returncode,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert run.returncode == 0, tail
    assert "Traceback" not in gateway.process.log_tail(400), gateway.process.log_tail(60)


def _raw_answer(gateway: Gateway, head: bytes, body_chunks: int, chunk: bytes) -> tuple[bytes, int]:
    """Send `head` then up to `body_chunks` copies of `chunk` (stopping when the gateway answers
    or stops reading); the answer and the body bytes the socket took."""
    sent = 0
    answer = b""
    pending = memoryview(b"")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=HANG_AFTER) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        left = body_chunks
        while (left or pending) and b"\r\n\r\n" not in answer:
            assert time.monotonic() - started < HANG_AFTER, f"no answer after {sent} bytes"
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if not pending and left:
                pending, left = memoryview(chunk), left - 1
            try:
                n = sock.send(pending)
                sent += n
                pending = pending[n:]
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        # Bounded: a gateway still waiting for the rest of the body must not hang the test.
        sock.settimeout(10)
        try:
            while b'"error"' not in answer and (more := sock.recv(65536)):
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


def test_oversized_and_malformed_input_is_refused_as_documented(
    gateway: Gateway, images: HostileImageHost
) -> None:
    answers: Counter[str] = Counter()
    tried = 0
    with (
        MemorySampler({"gateway": gateway.process.rss}, interval=0.2) as sampler,
        httpx.Client(base_url=gateway.url, timeout=HANG_AFTER) as client,
    ):
        hostile = [
            b'{"url": ' + b"[" * 1000 + b"]" * 1000 + b"}",
            b"[" * 200_000,
            b'{"url": "http://x.test/a.jpg", "n": ' + b"9" * 4301 + b"}",
            b'{"urls": [' + b"1" * 200_000 + b"]}",
        ]
        for _ in range(5):
            for route in ROUTES:
                for body in hostile:
                    r = client.post(route, content=body, headers={"content-type": "application/json"})
                    tried += 1
                    answers[f"json {r.status_code} {r.json()['error']['code']}"] += 1

        # 300 MB in one file field, chunked (no Content-Length to refuse it by): the limit
        # (20 MiB by default) must stop the read.
        boundary = "edge"
        part = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        block = b"\xff" * (1024 * 1024)
        frame = b"%x\r\n%s\r\n" % (len(block), block)
        for route in ("/v1/classify", "/v1/classify/batch"):
            head = (
                f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            ).encode() + b"%x\r\n%s\r\n" % (len(part), part)
            answer, sent = _raw_answer(gateway, head, 300, frame)
            tried += 1
            status = answer[9:12].decode(errors="replace")
            answers[f"upload-300MB {status}"] += 1
            record("edge-upload", {"route": route, "status": status, "sent_mib": round(sent / 2**20, 1)})
            assert status == "413", answer[:300]
            assert sent < 64 * 2**20, f"{sent / 2**20:.0f} MiB taken before the 413"

        urls = [images.url("/image/photo.jpg"), images.url("/image/notes.txt"), "http://10.0.0.1/a.jpg"]
        for _ in range(10):
            r = client.post("/v1/classify/batch", json={"urls": urls})
            tried += 1
            codes = [x.get("error", {}).get("code", "ok") for x in r.json()["results"]]
            answers[f"batch {r.status_code} {'/'.join(codes)}"] += 1
    growth = sampler.trends()["gateway"]
    log = gateway.process.log_tail(400)
    record(
        "edge-input",
        {
            "tried": tried,
            "answers": dict(answers),
            "5xx": sum(n for k, n in answers.items() if k.split()[1].startswith("5")),
            "rss_start_mib": round(growth.start, 1),
            "rss_peak_mib": round(growth.peak, 1),
            "rss_growth_mib": round(growth.peak - growth.start, 1),
            "tracebacks": log.count("Traceback"),
        },
    )
    assert set(answers) == {
        "json 400 bad_request",
        "upload-300MB 413",
        "batch 200 ok/not_an_image/url_not_allowed",
    }, answers
    assert "Traceback" not in log, log[-3000:]
    assert growth.peak - growth.start < 64, growth
