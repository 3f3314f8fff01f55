"""A bounded load test for the gateway (the course's HPA exercise), standard library only.

    ./pants loadtest -- --url http://127.0.0.1:8080 --image-url https://example.com/pants.jpg
    ./pants loadtest -- --url http://127.0.0.1:9696 --image shirt.jpg --concurrency 8

Sends the course's POST <url>/predict {"url": ...} (--image-url), or an image file as the body of
POST <url>/v1/classify (--image), from --concurrency threads until --requests have been sent or
--duration seconds have passed, whichever comes first (both are capped: this is a test, not a
flood). Prints a progress line every second and a summary: requests per second, latency
percentiles, and counts per HTTP status and per error. Exit status 0 when every request got a 2xx
answer, 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import http.client
import json
import mimetypes
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

MAX_REQUESTS = 100_000
MAX_DURATION = 600.0
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str

    @property
    def endpoint(self) -> str:
        # The course's /predict takes only {"url": ...}; an image body goes to /v1/classify.
        return "/predict" if self.content_type == "application/json" else "/v1/classify"


@dataclass
class Results:
    """What the workers record; every method holds the lock."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, limit: int) -> bool:
        with self.lock:
            if self.started >= limit:
                return False
            self.started += 1
            return True

    def record(self, latency: float, status: int | None, error: str | None) -> None:
        with self.lock:
            self.latencies.append(latency)
            if status is not None:
                self.statuses[status] += 1
            if error is not None:
                self.errors[error] += 1

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            done = len(self.latencies)
            failed = sum(self.errors.values()) + sum(
                n for s, n in self.statuses.items() if not 200 <= s < 300
            )
            return done, failed


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats
    return sorted_values[int(rank) - 1]


def _connect(target: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    return cls(target.hostname or "localhost", target.port, timeout=timeout)


def _worker(
    target: urllib.parse.SplitResult,
    path: str,
    payload: Payload,
    results: Results,
    limit: int,
    deadline: float,
    timeout: float,
) -> None:
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline and results.claim(limit):
        conn = connection if connection is not None else _connect(target, timeout)
        connection = conn
        start = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            conn.request("POST", path, body=payload.body, headers={"Content-Type": payload.content_type})
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                connection = None
        except (OSError, http.client.HTTPException) as e:
            error = type(e).__name__
            conn.close()
            connection = None  # reconnect: the server may have closed a kept-alive connection
        results.record(time.perf_counter() - start, status, error)
    if connection is not None:
        connection.close()


def run(
    url: str,
    payload: Payload,
    *,
    requests: int,
    duration: float,
    concurrency: int,
    timeout: float = 30.0,
    out: TextIO | None = None,
    progress_interval: float = 1.0,
) -> tuple[Results, float]:
    """Runs the load test; returns the results and the elapsed wall time in seconds."""
    out = out or sys.stderr
    target = urllib.parse.urlsplit(url)
    # A base URL gets the payload's endpoint; a URL with a path is used as given.
    path = target.path if target.path.strip("/") else payload.endpoint
    results = Results()
    start = time.monotonic()
    deadline = start + duration
    threads = [
        threading.Thread(
            target=_worker, args=(target, path, payload, results, requests, deadline, timeout), daemon=True
        )
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=progress_interval / len(threads))
        elapsed = time.monotonic() - start
        done, failed = results.snapshot()
        print(
            f"[{elapsed:6.1f}s] {done}/{requests} requests, "
            f"{done / max(elapsed, 1e-9):7.1f} req/s, {failed} failed",
            file=out,
            flush=True,
        )
    return results, time.monotonic() - start


def summary(results: Results, elapsed: float) -> str:
    latencies = sorted(results.latencies)
    lines = [
        f"requests: {len(latencies)} in {elapsed:.1f} s, {len(latencies) / max(elapsed, 1e-9):.1f} req/s",
        "latency ms: "
        + ", ".join(f"p{q:g} {percentile(latencies, q) * 1000:.1f}" for q in (50, 90, 95, 99))
        + (f", max {latencies[-1] * 1000:.1f}" if latencies else ""),
        "status: " + (", ".join(f"{s}: {n}" for s, n in sorted(results.statuses.items())) or "none"),
        "errors: " + (", ".join(f"{e}: {n}" for e, n in sorted(results.errors.items())) or "none"),
    ]
    return "\n".join(lines)


def _payload(ns: argparse.Namespace) -> Payload:
    if ns.image is not None:
        content_type = mimetypes.guess_type(ns.image.name)[0] or "application/octet-stream"
        return Payload(ns.image.read_bytes(), content_type)
    return Payload(json.dumps({"url": ns.image_url}).encode(), "application/json")


def _bounded(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loadtest",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="the gateway's base URL (or the full URL to POST to)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image-url", help='image URL the gateway fetches: sends {"url": ...}')
    source.add_argument("--image", type=Path, help="image file sent as the request body")
    parser.add_argument(
        "--requests",
        type=_bounded(int, 1, MAX_REQUESTS),
        default=1000,
        help="stop after this many (default 1000)",
    )
    parser.add_argument(
        "--duration",
        type=_bounded(float, 0.1, MAX_DURATION),
        default=60.0,
        help="stop after this many seconds (default 60)",
    )
    parser.add_argument(
        "--concurrency",
        type=_bounded(int, 1, MAX_CONCURRENCY),
        default=4,
        help="requests in flight (default 4)",
    )
    parser.add_argument(
        "--timeout", type=_bounded(float, 0.1, 300), default=30.0, help="per request, seconds"
    )
    ns = parser.parse_args(argv)
    if urllib.parse.urlsplit(ns.url).scheme not in ("http", "https"):
        parser.error("--url must be an http:// or https:// URL")
    try:
        payload = _payload(ns)
    except OSError as e:
        parser.error(f"--image: {e}")
    print(
        f"loadtest: POST {ns.url} x{ns.requests} (at most {ns.duration:g} s), {ns.concurrency} in flight",
        file=sys.stderr,
    )
    results, elapsed = run(
        ns.url,
        payload,
        requests=ns.requests,
        duration=ns.duration,
        concurrency=ns.concurrency,
        timeout=ns.timeout,
    )
    print(summary(results, elapsed))
    _, failed = results.snapshot()
    return 0 if failed == 0 and results.latencies else 1


if __name__ == "__main__":
    sys.exit(main())
