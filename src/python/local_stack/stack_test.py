"""The README's main job as a user runs it: `python -m local_stack`, use it, Ctrl-C."""

from __future__ import annotations

import http.server
import io
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from clothing_preproc.signature import COURSE_MODEL_NAME
from testing_support.ports import free_port
from testing_support.stack_program import StackProcess


def port_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 200)).save(buf, format="JPEG")
    body = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/shirt.jpg"
    finally:
        server.shutdown()
        server.server_close()


def ports() -> list[str]:
    return [f"--port={free_port()}", f"--grpc-port={free_port()}", f"--rest-port={free_port()}"]


def test_one_command_exports_serves_and_stops_on_ctrl_c(cache_dir: Path, image_url: str) -> None:
    args = ports()
    gateway_port = int(args[0].split("=")[1])
    grpc_port = int(args[1].split("=")[1])
    # A demo left by an earlier revision of the project (before the `pixels` signature): not served.
    legacy = cache_dir / "models" / COURSE_MODEL_NAME / "1"
    legacy.mkdir(parents=True)
    (legacy / "saved_model.pb").write_bytes(b"an older export")
    stack = StackProcess([*args, f"--cache-dir={cache_dir}"], {"GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8"})
    try:
        stack.wait_for("exporting the tiny demo model", 60)
        ready = stack.wait_for("ready in", 300)
        assert f"http://localhost:{gateway_port}" in ready
        # The course's request and answer shape.
        r = httpx.post(f"http://127.0.0.1:{gateway_port}/predict", json={"url": image_url}, timeout=30)
        assert r.status_code == 200
        assert len(r.json()) == 10
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/").status_code == 200
        # The gateway was handed the demo export's description: answers say the model is
        # untrained, which the page turns into its warning.
        rich = httpx.post(f"http://127.0.0.1:{gateway_port}/v1/classify", json={"url": image_url}, timeout=30)
        assert rich.json()["model"]["trained"] is False
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.output)
    assert "stopped" in stack.output[-1]
    assert port_closed(gateway_port), "the gateway is still running"
    assert port_closed(grpc_port), "the model server is still running"
    assert (cache_dir / "models-r2" / COURSE_MODEL_NAME / "1" / "saved_model.pb").is_file()
    # --cache-dir may be any folder: nothing the stack did not write now is deleted.
    assert (legacy / "saved_model.pb").read_bytes() == b"an older export"


def test_a_second_run_reuses_the_exported_model_and_sigterm_stops_it(cache_dir: Path) -> None:
    args = ports()
    stack = StackProcess([*args, f"--cache-dir={cache_dir}"])
    try:
        stack.wait_for("ready in", 300)
        assert not any("exporting" in line for line in stack.output)
        stack.process.send_signal(signal.SIGTERM)
        assert stack.process.wait(60) == 0
    finally:
        stack.stop()


def test_an_existing_tf_serving_is_used_instead(cache_dir: Path) -> None:
    # The first stack plays the existing TF Serving; the second starts only a gateway in front of it.
    first_args = ports()
    grpc_port = first_args[1].split("=")[1]
    first = StackProcess([*first_args, f"--cache-dir={cache_dir}"])
    try:
        first.wait_for("ready in", 300)
        second_port = free_port()
        second = StackProcess([f"--port={second_port}", f"--tf-serving=127.0.0.1:{grpc_port}"])
        try:
            second.wait_for("ready in", 120)
            assert any(f"using TF Serving at 127.0.0.1:{grpc_port}" in line for line in second.output)
            assert not any("starting the model server" in line for line in second.output)
        finally:
            assert second.stop() == 0
    finally:
        first.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"--model-dir=/nonexistent/models/{COURSE_MODEL_NAME}"], "does not exist"),
        (["--model-dir=/tmp", "--tf-serving=localhost:8500"], "not both"),
        (["--tf-serving=nohostport"], "expected HOST:PORT"),
    ],
)
def test_bad_settings_are_one_line_and_non_zero(args: list[str], message: str) -> None:
    stack = StackProcess([*args, f"--port={free_port()}"])
    code = stack.process.wait(60)
    out = "".join(stack.output)
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_a_version_folder_is_explained(cache_dir: Path, tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    stack = StackProcess([f"--model-dir={version}", f"--port={free_port()}"])
    assert stack.process.wait(60) == 1
    assert "give the folder that holds the numbered versions" in "".join(stack.output)


def test_a_taken_port_is_reported(cache_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        stack = StackProcess([f"--port={port}", f"--cache-dir={cache_dir}"])
        assert stack.process.wait(60) == 1
    assert f"port {port} (gateway) is in use" in "".join(stack.output)


def test_help_describes_every_flag() -> None:
    stack = StackProcess(["--help"])
    assert stack.process.wait(60) == 0
    out = "".join(stack.output)
    for flag in ("--model-dir", "--tf-serving", "--port", "--grpc-port", "--rest-port", "--cache-dir"):
        assert flag in out
