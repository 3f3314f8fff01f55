"""The gateway image, built with `./pants package` and run: a prediction through the container
from the local model server, as a read-only, non-root container that stops cleanly on SIGTERM.

Needs root (it installs and starts Debian's Docker engine if none runs); CI runs it that way.
The image is built by the repository's own `./pants package deploy/images/gateway`, run as a
second, daemon-less Pants in the build root (pants.toml's `[test] extra_env_vars` names it) with
its own workdir, against the daemon this test started, with BASE_IMAGE set to the Python image
made from Debian's archive.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from clothing_preproc import CLOTHING_LABELS
from clothing_preproc.signature import COURSE_MODEL_NAME
from deploy_checks.docker_support import Docker, base_image, docker_daemon, pants_package
from deploy_checks.testlib import DEPLOY_DIR, run
from export.demo import export_demo_model
from loadtest import load
from loadtest.loopback_image import serve_image
from testing_support.ports import free_port

MODEL_NAME = COURSE_MODEL_NAME


def _wait(what: str, ready: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:g} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The local model server on loopback with the demo model and the model image's batching file."""
    base = tmp_path_factory.mktemp("models")
    export_demo_model(base, "tiny", version=1)
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "model_server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--bind_address", "127.0.0.1",
         "--model_name", MODEL_NAME, "--model_base_path", str(base / MODEL_NAME),
         "--enable_batching=true",
         "--batching_parameters_file", str(DEPLOY_DIR / "images/model/batching_parameters.txt")],
    )  # fmt: skip
    try:
        # The model image's own readiness check decides when it is up.
        env = {"PATH": "/usr/bin:/bin", "MODEL_NAME": MODEL_NAME, "MODEL_READY_PORT": str(rest_port)}
        script = DEPLOY_DIR / "images/model/model-ready.sh"
        _wait(
            "model server",
            lambda: server.poll() is None and run([script], env=env, check=False).returncode == 0,
            120,
        )
        yield grpc_port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = f"test-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("pants-workdir")
    images = pants_package(docker, ["deploy/images/gateway"], tag, workdir, BASE_IMAGE=base_image(docker))
    image_id = images["clothing-gateway"]
    name = f"clothing-gateway:{tag}"
    # The image Pants reported, tagged as BUILD says, with the tag recorded in its label.
    assert docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip().startswith(
        f"sha256:{image_id}"
    )
    version = '{{index .Config.Labels "org.opencontainers.image.version"}}'
    assert docker("image", "inspect", "--format", version, name).stdout.strip() == tag
    yield name
    latest = docker("image", "inspect", "--format", "{{.Id}}", "clothing-gateway:latest", check=False)
    if latest.stdout.strip().startswith(f"sha256:{image_id}"):
        docker("image", "rm", "clothing-gateway:latest", check=False)
    docker("image", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    """A picture on loopback for the gateway to fetch, as the course's client sends a URL."""
    server, url = serve_image(_jpeg(), "shirt.jpg")
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gateway(docker: Docker, image: str, model_server: int) -> Iterator[tuple[str, str]]:
    """The container as Kubernetes runs it: read-only root, a tmpfs /tmp, the image's user."""
    port = free_port()
    name = f"clothing-gateway-test-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
           "--env", f"GATEWAY_PORT={port}", "--env", f"TF_SERVING_HOST=127.0.0.1:{model_server}",
           # The test's picture is served on loopback, which the SSRF policy refuses by default.
           "--env", "GATEWAY_FETCH_ALLOW_NETWORKS=127.0.0.0/8",
           image)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait("gateway container", lambda: _status(url + "/readyz") == 200, 60)
        yield url, name
    finally:
        logs = docker("logs", name, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        docker("rm", "--force", name, check=False)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # - loopback
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 40, 40)).save(out, format="JPEG")
    return out.getvalue()


def test_a_prediction_goes_through_the_container(gateway: tuple[str, str], image_url: str) -> None:
    # The course's request: POST /predict {"url": ...} -> {class: logit}.
    url, _ = gateway
    request = urllib.request.Request(
        url + "/predict",
        data=json.dumps({"url": image_url}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # - loopback
        assert response.status == 200
        scores = json.loads(response.read())
    assert list(scores) == list(CLOTHING_LABELS)
    assert all(isinstance(v, float) for v in scores.values())


def test_the_load_test_script_drives_the_container(gateway: tuple[str, str], image_url: str) -> None:
    url, _ = gateway
    payload = load.Payload(json.dumps({"url": image_url}).encode(), "application/json")
    results, elapsed = load.run(url, payload, requests=40, duration=60, concurrency=4, out=io.StringIO())
    assert results.statuses == {200: 40}
    assert not results.errors
    assert "requests: 40 in" in load.summary(results, elapsed)


def test_the_container_runs_as_the_unprivileged_user(docker: Docker, gateway: tuple[str, str]) -> None:
    _, name = gateway
    assert docker("inspect", "--format", "{{.Config.User}}", name).stdout.strip() == "10001:10001"
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"


def test_the_image_holds_no_tensorflow(docker: Docker, image: str) -> None:
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/gateway/bin/python3", image,
                    "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is None)")  # fmt: skip
    assert result.stdout.strip() == "True"


def test_sigterm_stops_it_promptly_and_cleanly(docker: Docker, image: str, model_server: int) -> None:
    # The gateway is PID 1 (no --init): it must handle SIGTERM itself.
    port = free_port()
    name = f"clothing-gateway-stop-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--env", f"GATEWAY_PORT={port}", "--env", f"TF_SERVING_HOST=127.0.0.1:{model_server}",
           image)  # fmt: skip
    try:
        _wait("gateway container", lambda: _status(f"http://127.0.0.1:{port}/healthz") == 200, 60)
        start = time.monotonic()
        docker("stop", "--time", "15", name)
        # Far below docker's 15 s: the signal was handled, not ignored until SIGKILL.
        assert time.monotonic() - start < 10
        assert docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        docker("rm", "--force", name, check=False)
