"""The model image, built with `./pants package deploy/images/model` on the stand-in TF Serving
base, and run with the gateway image: alone, then with Docker Compose.

The official tensorflow/serving image cannot be pulled here, so its place is taken by
deploy/images/tf-serving-standin (this project's model server as /usr/bin/tensorflow_model_server,
with the official image's entrypoint contract), built from the Python image made from Debian's
archive. What this proves is the model image's wiring: the export baked where the ENTRYPOINT
looks, the flags, the unprivileged read-only container, `model-ready`, the stop signal, the
gateway finding it by name, compose's file. Not TF Serving itself.

Needs root (it installs and starts Debian's Docker engine if none runs), like the gateway image's
test. The three images are built once, by two nested `./pants package` runs (the stand-in must
exist before the model image's build starts FROM it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from deploy_checks.docker_support import Docker, base_image, docker_daemon, pants_package
from deploy_checks.testlib import DEPLOY_DIR, apt_install, run
from testing_support.ports import free_port

LABELS = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
COMPOSE_FILE = DEPLOY_DIR / "compose/compose.yaml"


@dataclass(frozen=True)
class Images:
    tag: str
    standin: str
    model: str
    gateway: str


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_daemon() as daemon:
        yield daemon


@dataclass(frozen=True)
class CredentialHelper:
    """A Docker config whose logins live in a credential helper, as Docker Desktop, osxkeychain or
    ecr-login set it up: docker runs `docker-credential-<name>`, found on PATH."""

    config_dir: Path
    path: str
    calls: Path


@pytest.fixture(scope="module")
def credential_helper(tmp_path_factory: pytest.TempPathFactory) -> CredentialHelper:
    root = tmp_path_factory.mktemp("credential-helper")
    calls = root / "calls"
    helper = root / "bin" / "docker-credential-clothingtest"
    helper.parent.mkdir()
    # `list` (what docker build asks for) answers no logins; every call is recorded.
    helper.write_text(f'#!/bin/sh\necho "$1" >> {calls}\n[ "$1" = list ] && echo "{{}}"\nexit 0\n')
    helper.chmod(0o755)
    (root / "config").mkdir()
    (root / "config/config.json").write_text(json.dumps({"credsStore": "clothingtest"}))
    path = f"{helper.parent}:{os.environ.get('PATH', '')}:/usr/local/bin:/usr/bin:/bin"
    return CredentialHelper(root / "config", path, calls)


@pytest.fixture(scope="module")
def images(
    docker: Docker, credential_helper: CredentialHelper, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Images]:
    tag = f"test-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("pants-workdir")
    base = base_image(docker)
    # The user's PATH and Docker config, as pants.toml's [docker] env_vars pass them on.
    helper = {"DOCKER_CONFIG": str(credential_helper.config_dir), "PATH": credential_helper.path}
    built = pants_package(
        docker, ["deploy/images/tf-serving-standin"], tag, workdir, BASE_IMAGE=base, **helper
    )
    standin = f"clothing-tf-serving-standin:{tag}"
    built |= pants_package(
        docker, ["deploy/images/model", "deploy/images/gateway"], tag, workdir,
        BASE_IMAGE=base, TF_SERVING_IMAGE=standin,
    )  # fmt: skip
    assert set(built) == {"clothing-tf-serving-standin", "clothing-model", "clothing-gateway"}
    yield Images(tag, standin, f"clothing-model:{tag}", f"clothing-gateway:{tag}")
    for repository, image_id in built.items():
        latest = docker("image", "inspect", "--format", "{{.Id}}", f"{repository}:latest", check=False)
        if latest.stdout.strip().startswith(f"sha256:{image_id}"):
            docker("image", "rm", f"{repository}:latest", check=False)
        docker("image", "rm", "--force", f"{repository}:{tag}", check=False)


CUSTOM_LABELS = [f"class-{i}" for i in range(10)]


@pytest.fixture(scope="module")
def user_model_image(
    docker: Docker, images: Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The model image built from a model file of the user's (CLOTHING_MODEL, as kind.sh/eks.sh
    --model pass it), with labels and a preprocessing family of its own. The file: the demo
    export taken out of the first model image, a SavedModel directory the export tool re-exports.
    """
    root = tmp_path_factory.mktemp("user-model")
    container = docker("create", images.model).stdout.strip()
    try:
        docker("cp", f"{container}:/models/clothing-model/1", root / "saved")
    finally:
        docker("rm", container)
    labels = root / "labels.txt"
    labels.write_text("\n".join(CUSTOM_LABELS) + "\n")
    tag = f"{images.tag}-user"
    built = pants_package(
        docker, ["deploy/images/model"], tag, tmp_path_factory.mktemp("pants-workdir"),
        TF_SERVING_IMAGE=images.standin,
        CLOTHING_MODEL=str(root / "saved"), CLOTHING_MODEL_SHA256=tag,
        CLOTHING_MODEL_LABELS=str(labels), CLOTHING_MODEL_LABELS_SHA256=tag,
        CLOTHING_MODEL_FAMILY="resnet50",
    )  # fmt: skip
    assert set(built) == {"clothing-model"}
    yield f"clothing-model:{tag}"
    docker("image", "rm", "--force", f"clothing-model:{tag}", check=False)


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:g} s")
        time.sleep(0.5)


def _jpeg_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 90, 200)).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


def _post_predict(url: str) -> dict[str, float]:
    request = urllib.request.Request(
        url + "/predict",
        data=json.dumps({"b64": _jpeg_b64()}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # - a container on this machine
        assert response.status == 200
        scores: dict[str, float] = json.loads(response.read())
        return scores


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # - a container on this machine
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _address(docker: Docker, container: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    address = docker("inspect", "--format", fmt, container).stdout.strip()
    assert address, f"{container} has no address"
    return address


def _logs(docker: Docker, container: str) -> None:
    logs = docker("logs", container, check=False)
    print(f"--- {container}\n", logs.stdout[-3000:], logs.stderr[-3000:])


# Both containers as the pods run them: read-only root, a tmpfs /tmp, no capabilities, no new
# privileges, Docker's init as PID 1 (compose's `init: true`; a pod shares its process namespace).
LOCKED_DOWN = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges:true", "--init"]  # fmt: skip


@pytest.fixture(scope="module")
def network(docker: Docker) -> Iterator[str]:
    # A network of their own: the model image's ports are fixed (8500/8501) and the host's may be
    # taken; the gateway finds the model by its container name, as by a Service name.
    name = f"clothing-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    yield name
    docker("network", "rm", name, check=False)


@pytest.fixture(scope="module")
def model(docker: Docker, images: Images, network: str) -> Iterator[str]:
    name = f"tf-serving-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--network", network, *LOCKED_DOWN, images.model)
    try:
        yield name
    finally:
        _logs(docker, name)
        docker("rm", "--force", name, check=False)


def _model_ready(docker: Docker, container: str) -> bool:
    return docker("exec", container, "/usr/local/bin/model-ready", check=False, timeout=30).returncode == 0


def test_docker_under_pants_finds_the_users_credential_helper(
    images: Images, credential_helper: CredentialHelper
) -> None:
    # `./pants package`/`publish` run docker with the PATH pants.toml passes: a registry login
    # kept by a credential helper (ECR's, the OS keychain's) is read by running it.
    assert "list" in credential_helper.calls.read_text().split()


def test_the_stand_in_keeps_the_official_images_contract(docker: Docker, images: Images) -> None:
    fmt = "{{json .Config.Env}} {{json .Config.ExposedPorts}} {{json .Config.Entrypoint}}"
    env, ports, entrypoint = docker("image", "inspect", "--format", fmt, images.standin).stdout.split()
    assert {"MODEL_NAME=model", "MODEL_BASE_PATH=/models"} <= set(json.loads(env))
    assert set(json.loads(ports)) == {"8500/tcp", "8501/tcp"}
    assert json.loads(entrypoint) == ["/usr/bin/tf_serving_entrypoint.sh"]
    # TF Serving's flags are understood by the binary at TF Serving's path.
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "/usr/bin/tensorflow_model_server",
                    images.standin, "--help")  # fmt: skip
    for flag in ("--model_base_path", "--rest_api_port", "--enable_batching", "--monitoring_config_file"):
        assert flag in result.stdout


def test_model_ready_turns_true_once_the_baked_model_is_served(docker: Docker, model: str) -> None:
    _wait("model-ready", lambda: _model_ready(docker, model), 240)
    # The image's own user, not root, serves it.
    assert docker("inspect", "--format", "{{.Config.User}}", model).stdout.strip() == "10001:10001"
    # TF Serving's REST status, asked inside the container as model-ready does.
    request = "printf 'GET /v1/models/clothing-model HTTP/1.0\\r\\n\\r\\n' >&3"
    script = f"exec 3<>/dev/tcp/127.0.0.1/8501 && {request} && cat <&3"
    answer = docker("exec", model, "bash", "-c", script).stdout
    # (run() reads text: the answer's CRLFs arrive as newlines.)
    body = json.loads(answer.replace("\r\n", "\n").split("\n\n", 1)[1])
    assert body["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]


def test_a_prediction_goes_through_the_gateway_container(
    docker: Docker, images: Images, network: str, model: str
) -> None:
    _wait("model-ready", lambda: _model_ready(docker, model), 240)
    name = f"gateway-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--network", network, *LOCKED_DOWN,
           "--env", f"TF_SERVING_HOST={model}:8500", images.gateway)  # fmt: skip
    try:
        url = f"http://{_address(docker, name)}:9696"
        _wait("gateway", lambda: _status(url + "/readyz") == 200, 60)
        scores = _post_predict(url)
        assert list(scores) == LABELS
        assert all(isinstance(v, float) for v in scores.values())
    finally:
        _logs(docker, name)
        docker("rm", "--force", name, check=False)


def test_sigterm_stops_the_model_container_in_seconds(docker: Docker, images: Images, network: str) -> None:
    name = f"tf-serving-stop-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--network", network, *LOCKED_DOWN, images.model)
    try:
        _wait("model-ready", lambda: _model_ready(docker, name), 240)
        start = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)
        elapsed = time.monotonic() - start
        # Far below docker's 30 s before SIGKILL: the signal reached the server and ended it.
        assert elapsed < 10, elapsed
        state = docker("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name).stdout.split()
        assert state == ["0", "false"], state
    finally:
        _logs(docker, name)
        docker("rm", "--force", name, check=False)


def _compose() -> str:
    # Debian's docker-compose (1.x, Compose file format with depends_on conditions).
    if run(["sh", "-c", "command -v docker-compose"], check=False).returncode != 0:
        apt_install("docker-compose")
    return "docker-compose"


def test_compose_serves_a_prediction_through_its_network(docker: Docker, images: Images) -> None:
    project = f"clothing-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**docker.env, "IMAGE_TAG": images.tag, "GATEWAY_HOST_PORT": str(port)}
    compose = [_compose(), "-p", project, "-f", str(COMPOSE_FILE)]
    try:
        # --wait is not in compose 1.x: up returns once the gateway started, which compose does only
        # after TF Serving's health check (model-ready) passed.
        run([*compose, "up", "--detach"], env=env, timeout=600)
        url = f"http://127.0.0.1:{port}"
        _wait("gateway through compose", lambda: _status(url + "/readyz") == 200, 120)
        # Host -> published port -> gateway -> the compose network -> tf-serving:8500.
        scores = _post_predict(url)
        assert list(scores) == LABELS
    finally:
        logs = run([*compose, "logs", "--no-color", "--tail", "50"], env=env, check=False)
        print(logs.stdout[-5000:])
        run([*compose, "down", "--timeout", "30"], env=env, timeout=300, check=False)



def test_the_users_model_is_exported_verified_and_served(
    docker: Docker, user_model_image: str, network: str
) -> None:
    name = f"tf-serving-user-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--network", network, *LOCKED_DOWN, user_model_image)
    try:
        _wait("model-ready", lambda: _model_ready(docker, name), 240)
        # The export's description, baked with the model: the user's labels and family.
        description = json.loads(
            docker("exec", name, "cat", "/models/clothing-model/1/assets.extra/clothing_model.json").stdout
        )
        assert description["labels"] == CUSTOM_LABELS
        assert description["preprocessing"]["family"] == "resnet50"
    finally:
        _logs(docker, name)
        docker("rm", "--force", name, check=False)
