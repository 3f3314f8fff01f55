"""The load test against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import load


class _Gateway(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    received: list[bytes]
    paths: list[str]
    count = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.received.append(body)
        cls.paths.append(self.path)
        cls.count += 1
        # Every fifth request fails, as an overloaded gateway would.
        status = 429 if cls.count % 5 == 0 else 200
        answer = b'{"shirt": 1.5}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Handler", (_Gateway,), {"received": [], "paths": [], "count": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_sends_exactly_the_requested_number_and_summarises(
    gateway: tuple[str, type[_Gateway]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = gateway
    status = load.main(
        ["--url", url, "--image-url", "http://example.com/x.jpg", "--requests", "50", "--concurrency", "4"]
    )
    out, err = capsys.readouterr()
    assert handler.count == 50
    assert json.loads(handler.received[0]) == {"url": "http://example.com/x.jpg"}
    assert set(handler.paths) == {"/predict"}
    assert "requests: 50 in " in out
    assert " req/s" in out
    assert "p50 " in out
    assert "p99 " in out
    assert "status: 200: 40, 429: 10" in out
    assert "errors: none" in out
    assert "50/50 requests" in err  # the progress line
    assert status == 1  # some requests failed


def test_an_image_file_is_sent_as_the_body(gateway: tuple[str, type[_Gateway]], tmp_path: Path) -> None:
    url, handler = gateway
    image = tmp_path / "shirt.jpg"
    image.write_bytes(b"\xff\xd8\xff fake jpeg")
    status = load.main(["--url", url, "--image", str(image), "--requests", "3", "--concurrency", "1"])
    assert status == 0
    assert handler.received == [b"\xff\xd8\xff fake jpeg"] * 3
    # The course's /predict takes only a URL: an image body goes to the endpoint that accepts one.
    assert handler.paths == ["/v1/classify"] * 3


def test_a_url_with_a_path_is_used_as_given(gateway: tuple[str, type[_Gateway]]) -> None:
    url, handler = gateway
    load.main(["--url", url + "/custom", "--image-url", "u", "--requests", "2", "--concurrency", "1"])
    assert handler.paths == ["/custom"] * 2


def test_duration_bounds_the_run(gateway: tuple[str, type[_Gateway]]) -> None:
    url, _ = gateway
    start = time.monotonic()
    results, elapsed = load.run(
        url,
        load.Payload(b"{}", "application/json"),
        requests=1_000_000,
        duration=0.5,
        concurrency=2,
        out=io.StringIO(),
        progress_interval=0.1,
    )
    assert time.monotonic() - start < 3
    assert 0 < len(results.latencies) < 1_000_000


def test_connection_errors_are_counted_not_fatal() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        results, _ = load.run(
            url,
            load.Payload(b"{}", "application/json"),
            requests=5,
            duration=10,
            concurrency=1,
            out=io.StringIO(),
        )
    assert results.errors == {"ConnectionRefusedError": 5}
    assert "errors: ConnectionRefusedError: 5" in load.summary(results, 1.0)


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "http://x", "--image-url", "u", "--requests", "0"],
        ["--url", "http://x", "--image-url", "u", "--duration", "100000"],
        ["--url", "http://x", "--image-url", "u", "--concurrency", "100000"],
        ["--url", "ftp://x", "--image-url", "u"],
        ["--url", "http://x"],  # nothing to send
    ],
)
def test_unbounded_or_bad_usage_is_refused(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load.main(args)
    assert exit_info.value.code == 2


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 50
    assert load.percentile(values, 99) == 99
    assert load.percentile(values, 100) == 100
    assert load.percentile([7.0], 95) == 7.0
