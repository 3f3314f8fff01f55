"""A canary rollout on the model image, live: two versions baked, TF Serving's label map moved by
rewriting the mounted model config, no restart.

The model image is built as `kind.sh up --canary-model FILE` builds it (CLOTHING_CANARY_MODEL: the
demo model as version 1, a second demo model with other weights as version 2) on the stand-in TF
Serving base (deploy/images/tf-serving-standin: this project's model server, which follows TF
Serving's model config, label rules and polling). The container gets the Deployment's own `args`
(rendered from deploy/base) and its ConfigMap mounted as the kubelet mounts one: a directory whose
`models.config` is a symlink into `..data`, swapped atomically on every update. Each config the
test writes is the one `deploy/lib.sh`'s `model_config` writes for `canary`, `promote` and
`rollback`. What cannot run here is kind itself; this is the pod's part of a rollout.

Needs root and Docker, like model_image_test.py (docker_support starts a private daemon).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from clothing_preproc import array_to_tensor_proto, tensor_proto_to_array
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from deploy_checks.docker_support import Docker, base_image, docker_daemon, pants_package, pants_run
from deploy_checks.k8s_manifests import containers, one, render
from deploy_checks.testlib import DEPLOY_DIR, run

LOCKED_DOWN = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges:true", "--init"]  # fmt: skip


@dataclass(frozen=True)
class Pod:
    """The TF Serving container of deploy/base, as far as a rollout touches it."""

    args: list[str]
    config_mount: str  # where the ConfigMap tf-serving-models is mounted
    poll_seconds: float  # --model_config_file_poll_wait_seconds


@pytest.fixture(scope="module")
def pod() -> Pod:
    manifests = render("base")
    deployment = one(manifests, "Deployment", "tf-serving")
    (container,) = (c for c in containers(deployment) if c["name"] == "tf-serving")
    (volume,) = (v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == "tf-serving-models"
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert "subPath" not in mount  # a subPath mount never sees an update
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in container["args"])
    assert flags["model_config_file"] == f"{mount['mountPath']}/models.config"
    return Pod(container["args"], mount["mountPath"], float(flags["model_config_file_poll_wait_seconds"]))


def model_config(stable: int, canary: int, *versions: int) -> str:
    """What deploy/lib.sh writes into the ConfigMap for this label map."""
    script = f"source {DEPLOY_DIR}/lib.sh && model_config {stable} {canary} {' '.join(map(str, versions))}"
    return run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin"}).stdout


class MountedConfigMap:
    """A ConfigMap volume as the kubelet writes it: the key is a symlink through `..data`, which is
    swapped atomically to a new timestamped directory on each update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        root.chmod(0o755)
        (root / "models.config").symlink_to("..data/models.config")
        self.updates = 0

    def write(self, text: str) -> None:
        self.updates += 1
        data = self.root / f"..update_{self.updates}"
        data.mkdir(mode=0o755)
        (data / "models.config").write_text(text)
        (data / "models.config").chmod(0o644)
        link = self.root / "..data_tmp"
        link.symlink_to(data.name)
        os.replace(link, self.root / "..data")


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def two_version_image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The model image with the demo model as version 1 and, as kind.sh --canary-model bakes a
    second model, another demo model (other weights: seed 1) as version 2."""
    tag = f"test-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("pants-workdir")
    canary = tmp_path_factory.mktemp("canary")
    demo = ["demo", "--kind", "tiny", "--seed", "1", "--base", str(canary), "--version", "1"]
    pants_run("src/python/export:export", demo, workdir)
    base = base_image(docker)
    built = pants_package(docker, ["deploy/images/tf-serving-standin"], tag, workdir, BASE_IMAGE=base)
    built |= pants_package(
        docker, ["deploy/images/model"], tag, workdir,
        TF_SERVING_IMAGE=f"clothing-tf-serving-standin:{tag}",
        CLOTHING_CANARY_MODEL=str(canary / COURSE_MODEL_NAME / "1"), CLOTHING_CANARY_MODEL_SHA256=tag,
    )  # fmt: skip
    assert set(built) == {"clothing-tf-serving-standin", "clothing-model"}
    yield f"clothing-model:{tag}"
    for repository in built:
        docker("image", "rm", "--force", f"{repository}:{tag}", check=False)


@dataclass
class Server:
    docker: Docker
    name: str
    address: str

    def status(self) -> dict[int, str]:
        try:
            with urllib.request.urlopen(  # - a container on this machine
                f"http://{self.address}:8501/v1/models/{COURSE_MODEL_NAME}", timeout=5
            ) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError):
            return {}
        return {int(v["version"]): v["state"] for v in body["model_version_status"]}

    def predict(self, label: str) -> tuple[int, np.ndarray]:
        """(the version that answered, its scores) for a Predict by version label."""
        request = serving_pb2.PredictRequest()
        request.model_spec.name = COURSE_MODEL_NAME
        request.model_spec.version_label = label
        images = np.random.default_rng(7).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
        request.inputs[COURSE_INPUT_NAME].CopyFrom(array_to_tensor_proto(images))
        with grpc.insecure_channel(f"{self.address}:8500") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        return response.model_spec.version.value, tensor_proto_to_array(response.outputs[COURSE_OUTPUT_NAME])

    def started_at(self) -> str:
        fmt = "{{.State.StartedAt}} {{.RestartCount}} {{.State.Pid}}"
        return self.docker("inspect", "--format", fmt, self.name).stdout.strip()


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> float:
    """Seconds until `ready()`; fails after `timeout`."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.25)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server(
    docker: Docker, two_version_image: str, pod: Pod, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, MountedConfigMap]]:
    config = MountedConfigMap(tmp_path_factory.mktemp("configmap") / "volume")
    # What `canary` leads to: both versions loaded, stable on 1, canary on 2. As a first config
    # (a pod started during a canary), which TF Serving accepts with the Deployment's
    # --allow_version_labels_for_unavailable_models.
    config.write(model_config(1, 2, 1, 2))
    network = f"clothing-rollout-{uuid.uuid4().hex[:8]}"
    name = f"tf-serving-{uuid.uuid4().hex[:8]}"
    docker("network", "create", network)
    try:
        docker("run", "--detach", "--name", name, "--network", network, *LOCKED_DOWN,
               "--volume", f"{config.root}:{pod.config_mount}:ro", two_version_image, *pod.args)  # fmt: skip
        address = docker(
            "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
        ).stdout.strip()
        yield Server(docker, name, address), config
    finally:
        logs = docker("logs", name, check=False)
        print(f"--- {name}\n", logs.stdout[-4000:], logs.stderr[-6000:])
        docker("rm", "--force", name, check=False)
        docker("network", "rm", network, check=False)


def test_the_deployments_args_serve_both_baked_versions_by_label(
    server: tuple[Server, MountedConfigMap],
) -> None:
    tf_serving, _ = server
    _wait("both versions AVAILABLE", lambda: tf_serving.status() == {1: "AVAILABLE", 2: "AVAILABLE"}, 300)
    stable_version, stable_scores = tf_serving.predict("stable")
    canary_version, canary_scores = tf_serving.predict("canary")
    assert (stable_version, canary_version) == (1, 2)
    # Two different models answer: the canary's weights are not the stable one's.
    assert not np.allclose(stable_scores, canary_scores)


def test_promote_and_rollback_move_the_labels_within_a_poll_without_a_restart(
    server: tuple[Server, MountedConfigMap], pod: Pod
) -> None:
    tf_serving, config = server
    _wait("both versions AVAILABLE", lambda: tf_serving.status() == {1: "AVAILABLE", 2: "AVAILABLE"}, 300)
    started = tf_serving.started_at()
    # A label may only move onto an AVAILABLE version, and it moves at the next poll of the file.
    bound = pod.poll_seconds + 3

    # promote: both labels on 2, version 1 unloaded.
    config.write(model_config(2, 2, 2))
    moved = _wait("stable on version 2", lambda: tf_serving.predict("stable")[0] == 2, bound)
    print(f"promote: the stable label followed in {moved:.1f} s (poll interval {pod.poll_seconds:g} s)")
    _wait("version 1 unloaded", lambda: tf_serving.status().get(1) == "END", bound)
    assert tf_serving.predict("canary")[0] == 2

    # rollback after a promote: version 1 loads again (labels stay on 2), then the labels go back.
    config.write(model_config(2, 2, 1, 2))
    _wait("version 1 AVAILABLE again", lambda: tf_serving.status() == {1: "AVAILABLE", 2: "AVAILABLE"}, 120)
    config.write(model_config(1, 1, 1))
    moved = _wait("both labels on version 1", lambda: tf_serving.predict("canary")[0] == 1, bound)
    print(f"rollback: the canary label followed in {moved:.1f} s")
    assert tf_serving.predict("stable")[0] == 1
    _wait("version 2 unloaded", lambda: tf_serving.status().get(2) == "END", bound)

    # The same process served all of it.
    assert tf_serving.started_at() == started
    assert config.updates == 4
