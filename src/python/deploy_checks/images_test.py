"""The Dockerfiles: hadolint-clean, and the facts the manifests and TF Serving rely on."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clothing_preproc.signature import COURSE_MODEL_NAME
from deploy_checks.testlib import DEPLOY_DIR, REPO_ROOT, run, tool
from loadtest.loopback_image import serve

DOCKERFILES = sorted(DEPLOY_DIR.glob("images/*/Dockerfile"))
GATEWAY = (DEPLOY_DIR / "images/gateway/Dockerfile").read_text()
MODEL = (DEPLOY_DIR / "images/model/Dockerfile").read_text()


def test_both_images_are_there() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["gateway", "model", "tf-serving-standin"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    # Exit status 1 on any finding, style included.
    run([tool("hadolint"), "--failure-threshold", "style", dockerfile])


def test_hadolint_finds_nothing_in_the_builder() -> None:
    run([tool("hadolint"), "--failure-threshold", "style", DEPLOY_DIR / "builder/Dockerfile"])


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    result = run([tool("hadolint"), bad], check=False)
    assert result.returncode != 0
    assert "DL3008" in result.stdout or "DL3006" in result.stdout


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _last(dockerfile: str, instruction: str) -> str:
    return [arg for name, arg in _instructions(dockerfile) if name == instruction][-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_build_arg_pants_passes_has_a_default_in_the_dockerfile(dockerfile: Path) -> None:
    # Pants refuses to build an image when an argument from [docker].build_args or the target's
    # extra_build_args is neither in its environment nor declared with a default in the
    # Dockerfile: `./pants package` must work with none of them set.
    shared = tomllib.loads((REPO_ROOT / "pants.toml").read_text())["docker"]["build_args"]
    build = (dockerfile.parent / "BUILD").read_text()
    extra = re.search(r"extra_build_args=\[(.*?)\]", build, flags=re.DOTALL)
    names = [*shared, *(re.findall(r'"([A-Z_]+)"', extra.group(1)) if extra else [])]
    assert names
    text = dockerfile.read_text()
    for name in names:
        declared = re.search(rf"^ARG {name}=\S", text, flags=re.MULTILINE)
        assert declared, f"{dockerfile}: no ARG {name}=<default>"


def test_gateway_image_runs_the_pex_as_a_non_root_user() -> None:
    # Pants infers the PEX dependency from this exact path.
    assert "COPY src.python.gateway/gateway.pex " in GATEWAY
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", _last(GATEWAY, "USER"))  # numeric, not root
    assert _last(GATEWAY, "EXPOSE") == "9696"
    assert "/healthz" in _last(GATEWAY, "HEALTHCHECK")
    # The default base is the official slim Python 3.11; it can be swapped with BASE_IMAGE.
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in GATEWAY
    assert _last(GATEWAY, "FROM") == "${BASE_IMAGE}"


def _locked_versions(lockfile: Path) -> dict[str, tuple[int, ...]]:
    # A Pants lockfile: a `//` comment header, then JSON.
    text = "\n".join(line for line in lockfile.read_text().splitlines() if not line.startswith("//"))
    resolve = json.loads(text)["locked_resolves"][0]["locked_requirements"]
    # The release's numbers only: a pre-release's own part (`0.66b2`) is not one of them.
    release = {r["project_name"]: re.sub(r"[^\d.].*", "", r["version"]) for r in resolve}
    return {name: tuple(int(p) for p in re.findall(r"\d+", version)[:3]) for name, version in release.items()}


def _served_version() -> tuple[int, ...]:
    pattern = r"^ARG TF_SERVING_IMAGE=tensorflow/serving:(\d+)\.(\d+)\.(\d+)$"
    served = re.search(pattern, MODEL, flags=re.MULTILINE)
    assert served is not None, "the TF Serving version must be a full x.y.z tag"
    return tuple(map(int, served.groups()))


def test_model_image_serves_a_new_enough_tf_serving() -> None:
    # A model exported by TensorFlow X needs TF Serving >= X: newer TensorFlow writes ops older
    # servers reject. Both the pin's range and the version the lockfile actually installs.
    requirements = (REPO_ROOT / "3rdparty/python/tensorflow-requirements.txt").read_text()
    pinned = re.search(r"^tensorflow==(\d+)\.(\d+)", requirements, flags=re.MULTILINE)
    assert pinned is not None
    locked = _locked_versions(REPO_ROOT / "3rdparty/python/tensorflow.lock")
    assert _served_version()[:2] >= tuple(map(int, pinned.groups()))
    assert _served_version() >= locked["tensorflow"]
    # tensorflow-serving-api is released with TF Serving under the same version (docs/deploy.md:
    # the evidence that the image tag exists); the client protos the tests use match the server.
    assert _served_version() == locked["tensorflow-serving-api"]


def test_the_tf_serving_version_check_can_fail(tmp_path: Path) -> None:
    lockfile = tmp_path / "tensorflow.lock"
    newer = {"project_name": "tensorflow", "version": "2.22.0"}
    lockfile.write_text("// header\n" + json.dumps({"locked_resolves": [{"locked_requirements": [newer]}]}))
    assert _served_version() < _locked_versions(lockfile)["tensorflow"]


def test_model_image_bakes_the_export_layout_where_tf_serving_looks() -> None:
    # The export tool writes <base>/<name>/<version>/; the image's ENTRYPOINT serves
    # /models/<name>, and model-ready asks for MODEL_NAME.
    assert "COPY deploy/images/model/models/ /models/" in MODEL
    assert re.search(r"^ENV MODEL_NAME=clothing-model\b", MODEL, flags=re.MULTILINE)
    entrypoint = json.loads(_last(MODEL, "ENTRYPOINT"))
    assert "--model_name=clothing-model" in entrypoint
    assert "--model_base_path=/models/clothing-model" in entrypoint
    build = (DEPLOY_DIR / "images/model/BUILD").read_text()
    # The export's layout arguments, the same for the demo model, the user's and a canary.
    args = re.search(r"^_LAYOUT = \[(.*?)\]", build, flags=re.DOTALL | re.MULTILINE)
    assert args is not None
    words = re.findall(r'"([^"]*)"', args.group(1))
    assert words[words.index("--base") + 1] == "models"  # -> deploy/images/model/models/
    assert words[words.index("--name") + 1] == COURSE_MODEL_NAME
    # The model as CLOTHING_MODEL_VERSION (default 1), a canary as the next version.
    assert '_VERSION = int(env("CLOTHING_MODEL_VERSION", "1"))' in build
    assert build.count('*_LAYOUT, "--version", str(_VERSION)') == 2  # the user's model, the demo
    assert build.count('*_LAYOUT, "--version", str(_VERSION + 1)') == 1  # the canary
    assert _last(MODEL, "USER") != "root"
    assert _last(MODEL, "USER").split(":")[0] != "0"


def test_model_image_runs_tensorflow_model_server_itself() -> None:
    # Exec form, the binary first: no shell (the base image's tf_serving_entrypoint.sh runs the
    # server without exec) between the container runtime's stop signal and the server.
    entrypoint = _last(MODEL, "ENTRYPOINT")
    assert entrypoint.startswith("["), "a shell-form ENTRYPOINT runs /bin/sh -c"
    argv = json.loads(entrypoint)
    assert argv[0] == "/usr/bin/tensorflow_model_server"
    # Every flag the official entrypoint script passes, spelt out (exec form expands nothing).
    assert argv[1:] == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=clothing-model",
        "--model_base_path=/models/clothing-model",
    ]
    assert "$" not in entrypoint
    assert json.loads(_last(MODEL, "CMD"))[0].startswith("--")  # flags appended, not a command


def test_model_image_enables_batching_warmup_and_the_readiness_script() -> None:
    cmd = _last(MODEL, "CMD")
    for flag in (
        "--enable_batching=true",
        "--batching_parameters_file=/etc/tf-serving/batching_parameters.txt",
        "--enable_model_warmup=true",
        "--enable_grpc_healthcheck_service=true",
    ):
        assert flag in cmd
    assert "/usr/local/bin/model-ready" in _last(MODEL, "HEALTHCHECK")
    assert os.access(DEPLOY_DIR / "images/model/model-ready.sh", os.X_OK)  # COPY keeps the mode
    batching = (DEPLOY_DIR / "images/model/batching_parameters.txt").read_text()
    assert re.search(r"max_batch_size \{ value: (\d+) \}", batching)
    sizes = [int(s) for s in re.findall(r"allowed_batch_sizes: (\d+)", batching)]
    max_batch = int(re.search(r"max_batch_size \{ value: (\d+) \}", batching).group(1))  # type: ignore[union-attr]
    # TF Serving refuses a config whose largest allowed size differs from max_batch_size.
    assert sizes == sorted(sizes)
    assert sizes[-1] == max_batch


class FakeTFServing:
    """TF Serving's REST model status for `clothing-model`: 200 whatever the state, like TF Serving."""

    def __init__(self) -> None:
        self.state = "LOADING"
        self.paths: list[str] = []
        self.server, self.port = serve(self._answer)

    def _answer(self, path: str) -> tuple[str, bytes] | None:
        self.paths.append(path)
        if path not in ("/v1/models/clothing-model", "/v1/models/clothing-model/versions/2"):
            return None
        body = (
            f'{{"model_version_status": [{{"version": "1", "state": "{self.state}", '
            '"status": {"error_code": "OK", "error_message": ""}}]}'
        )
        return "application/json", body.encode()


@pytest.fixture()
def fake_tf_serving() -> Iterator[FakeTFServing]:
    fake = FakeTFServing()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_model_ready_waits_for_available_not_for_http_200(fake_tf_serving: FakeTFServing) -> None:
    script = DEPLOY_DIR / "images/model/model-ready.sh"
    env = {
        "PATH": "/usr/bin:/bin",
        "MODEL_NAME": COURSE_MODEL_NAME,
        "MODEL_READY_PORT": str(fake_tf_serving.port),
    }
    loading = run([script], env=env, check=False, timeout=20)
    assert loading.returncode == 1
    assert "not AVAILABLE" in loading.stderr
    assert "LOADING" in loading.stderr
    fake_tf_serving.state = "AVAILABLE"
    assert run([script], env=env, check=False, timeout=20).returncode == 0
    # Another model name: TF Serving answers 404, not ready.
    assert run([script], env={**env, "MODEL_NAME": "other"}, check=False, timeout=20).returncode == 1


def test_model_ready_asks_for_one_version_when_given_one(fake_tf_serving: FakeTFServing) -> None:
    # kind.sh/eks.sh `canary`, `promote` and `rollback` wait on it for a version to load or leave.
    script = DEPLOY_DIR / "images/model/model-ready.sh"
    port = str(fake_tf_serving.port)
    env = {"PATH": "/usr/bin:/bin", "MODEL_NAME": COURSE_MODEL_NAME, "MODEL_READY_PORT": port}
    fake_tf_serving.state = "AVAILABLE"
    assert run([script, "2"], env=env, check=False, timeout=20).returncode == 0
    assert fake_tf_serving.paths[-1] == "/v1/models/clothing-model/versions/2"
    fake_tf_serving.state = "END"
    unloaded = run([script, "2"], env=env, check=False, timeout=20)
    assert unloaded.returncode == 1
    assert "clothing-model version 2 is not AVAILABLE" in unloaded.stderr
    refused = run([script, "two"], env=env, check=False, timeout=20)
    assert refused.returncode == 2
    assert "VERSION must be a version number" in refused.stderr


def test_model_ready_fails_fast_when_nothing_listens() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        result = run(
            [DEPLOY_DIR / "images/model/model-ready.sh"],
            env={"PATH": "/usr/bin:/bin", "MODEL_NAME": COURSE_MODEL_NAME, "MODEL_READY_PORT": str(port)},
            check=False,
            timeout=20,
        )
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
