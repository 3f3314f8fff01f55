"""The deploy scripts: valid bash, shellcheck-clean, a --dry-run that shows the whole workflow,
and a clear stop before doing anything when a prerequisite is missing."""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from pathlib import Path

import pytest

from deploy_checks.k8s_manifests import Manifest, load_documents, one
from deploy_checks.testlib import DEPLOY_DIR, REPO_ROOT, run, tool

SCRIPTS = sorted(DEPLOY_DIR.glob("**/*.sh"))
WORKFLOWS = {"kind": DEPLOY_DIR / "kind/kind.sh", "eks": DEPLOY_DIR / "eks/eks.sh"}


def _env(path_dirs: list[Path], tmp: Path | None = None) -> dict[str, str]:
    # Only the given directories plus the basics a script itself needs (bash, coreutils, sed,
    # git): whatever kind/eksctl/aws the machine may have is out of sight.
    basics = ["/usr/bin", "/bin"]
    env = {"PATH": os.pathsep.join([*map(str, path_dirs), *basics]), "HOME": os.environ.get("HOME", "/tmp")}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)  # where a dry run leaves the files it generated
    return env


def _fake_tools(tmp_path: Path, names: list[str]) -> Path:
    """Executables that record their arguments, so a test can see what a script ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_every_script_is_found() -> None:
    names = {p.relative_to(DEPLOY_DIR).as_posix() for p in SCRIPTS}
    assert {"kind/kind.sh", "eks/eks.sh", "lib.sh", "images/model/model-ready.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    run(["bash", "-n", script])
    # -x follows `source` into lib.sh; the scripts name it relative to their own directory.
    run([tool("shellcheck"), "-x", "--severity=style", script], cwd=script.parent)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_help_describes_the_commands(name: str) -> None:
    result = run(["bash", WORKFLOWS[name], "--help"], env=_env([]))
    assert "usage:" in result.stdout
    for command in ("up", "down", "--dry-run"):
        assert command in result.stdout


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_bad_usage_exits_2(name: str) -> None:
    result = run(["bash", WORKFLOWS[name], "sideways"], env=_env([]), check=False)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def _only_version_queries(tmp_path: Path) -> None:
    # Asking a tool its version is all a script may do before its prerequisites are met.
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    assert all(re.fullmatch(r"\S+ (version( --client)?|--version)", c) for c in calls), calls


def test_kind_up_stops_before_doing_anything_when_kind_is_missing(tmp_path: Path) -> None:
    # Everything but kind is there (and records its calls): nothing may run.
    bin_dir = _fake_tools(tmp_path, ["docker", "kubectl", "curl"])
    result = run(["bash", WORKFLOWS["kind"], "up"], env=_env([bin_dir]), check=False)
    assert result.returncode == 2
    assert "missing prerequisite: kind" in result.stderr
    assert "kind.sigs.k8s.io" in result.stderr  # where to get it
    _only_version_queries(tmp_path)


def test_eks_up_names_every_missing_tool(tmp_path: Path) -> None:
    bin_dir = _fake_tools(tmp_path, ["kubectl", "docker"])
    result = run(["bash", WORKFLOWS["eks"], "up"], env=_env([bin_dir]), check=False)
    assert result.returncode == 2
    assert "missing prerequisite: aws" in result.stderr
    assert "missing prerequisite: eksctl" in result.stderr
    _only_version_queries(tmp_path)


def _commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def _render_generated(stdout: str, tmp_path: Path) -> list[Manifest]:
    """Renders the kustomization the script would apply, as it would (kubectl kustomize)."""
    (path,) = re.findall(r"^# (\S+)/kustomization\.yaml:$", stdout, flags=re.MULTILINE)
    overlay = Path(path)
    assert overlay.is_relative_to(tmp_path)
    # What the dry run printed is what the files hold.
    for name in ("kustomization.yaml", "models.config"):
        assert _printed_file(stdout, overlay / name) == (overlay / name).read_text()
    return load_documents(run([tool("kubectl"), "kustomize", overlay]).stdout)


def _printed_file(stdout: str, path: Path) -> str:
    """A file a dry run printed: its `# PATH:` line, then its lines indented by `#   `."""
    lines = stdout.splitlines()
    start = lines.index(f"# {path}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("#   ")), len(lines))
    return "".join(line[4:] + "\n" for line in lines[start:end])


def _assert_in_order(commands: list[str], expected: list[str]) -> None:
    """Each pattern matches one of `commands`, in the order the patterns are listed."""
    positions = [next(i for i, c in enumerate(commands) if re.match(p, c)) for p in expected]
    assert positions == sorted(positions), commands


def test_kind_dry_run_prints_the_whole_workflow(tmp_path: Path) -> None:
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", "--tag", "abc123", "up"], env=_env([], tmp_path))
    commands = _commands(result.stdout)
    # In order: build, cluster, load, metrics-server, apply, wait, smoke.
    expected = [
        r"env IMAGE_TAG=abc123 \./pants --no-dynamic-ui package deploy/images/gateway deploy/images/model",
        r"kind create cluster --name clothing --config \S+/deploy/kind/cluster\.yaml",
        r"kind load docker-image --name clothing clothing-gateway:abc123 clothing-model:abc123",
        r"kubectl --context kind-clothing apply -f \S+metrics-server\S+",
        r"kubectl --context kind-clothing -n kube-system patch deployment metrics-server",
        r"kubectl --context kind-clothing apply -k \S+",
        r"kubectl --context kind-clothing -n clothing rollout status deployment/tf-serving",
        r"kubectl --context kind-clothing -n clothing rollout status deployment/gateway",
        r"curl .*http://127\.0\.0\.1:8080/readyz",
    ]
    _assert_in_order(commands, expected)
    # Dry run: the missing tools are reported, not fatal.
    assert "missing prerequisite: kind" in result.stderr
    # The manifests it would apply use the images it would load.
    manifests = _render_generated(result.stdout, tmp_path)
    images = {
        c["image"]
        for d in manifests
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"clothing-gateway:abc123", "clothing-model:abc123"}
    assert one(manifests, "Service", "gateway")["spec"]["type"] == "NodePort"


def test_eks_dry_run_prints_the_whole_workflow(tmp_path: Path) -> None:
    result = run(
        ["bash", WORKFLOWS["eks"], "--dry-run", "--region", "us-east-2", "--tag", "abc123", "up"],
        env=_env([], tmp_path),
    )
    commands = _commands(result.stdout)
    registry = "<account>.dkr.ecr.us-east-2.amazonaws.com"
    # The images first: a broken build stops before anything exists in the AWS account.
    expected = [
        r"env IMAGE_TAG=abc123 \./pants .*docker-registries.* "
        r"package deploy/images/gateway deploy/images/model",
        r"eksctl create cluster -f \S+",
        r"aws eks update-kubeconfig --name clothing --region us-east-2 --alias eks-clothing-us-east-2",
        r"aws ecr describe-repositories .*clothing-gateway .*\|\| "
        r"aws ecr create-repository .*clothing-gateway",
        r"aws ecr describe-repositories .*clothing-model .*\|\| aws ecr create-repository .*clothing-model",
        r"aws ecr get-login-password --region us-east-2 \| docker login --username AWS --password-stdin "
        + re.escape(registry),
        # This host's docker pushes, so the login's credential helper is on its PATH.
        r"docker push .*/clothing-gateway:abc123",
        r"docker push .*/clothing-model:abc123",
        r"kubectl --context eks-clothing-us-east-2 apply -k \S+",
        r"kubectl --context eks-clothing-us-east-2 -n clothing rollout status deployment/tf-serving",
        r"kubectl --context eks-clothing-us-east-2 -n clothing get service gateway",
    ]
    _assert_in_order(commands, expected)
    assert result.stdout.rstrip().endswith("http://<load balancer hostname>")
    manifests = _render_generated(result.stdout, tmp_path)
    images = {
        c["image"]
        for d in manifests
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"{registry}/clothing-gateway:abc123", f"{registry}/clothing-model:abc123"}


def test_eks_down_releases_the_load_balancer_before_deleting_the_cluster(tmp_path: Path) -> None:
    result = run(["bash", WORKFLOWS["eks"], "--dry-run", "--tag", "t", "down"], env=_env([], tmp_path))
    commands = _commands(result.stdout)
    delete = "kubectl --context eks-clothing-eu-west-1 delete -k"
    delete_workloads = next(i for i, c in enumerate(commands) if c.startswith(delete))
    delete_cluster = next(i for i, c in enumerate(commands) if c.startswith("eksctl delete cluster"))
    assert delete_workloads < delete_cluster


def test_the_pants_registry_option_is_a_python_literal(tmp_path: Path) -> None:
    # Pants parses dict options as Python literals: JSON's `true` would be rejected at publish.
    result = run(["bash", WORKFLOWS["eks"], "--dry-run", "--tag", "t", "up"], env=_env([], tmp_path))
    (package,) = (c for c in _commands(result.stdout) if "docker-registries" in c)
    assert "True" in package
    assert "true" not in package


def test_images_are_built_in_the_builder_where_the_host_cannot(tmp_path: Path) -> None:
    # As on a macOS host: the builder image is built for linux/amd64, then ./pants runs in it with
    # the checkout, the cache volume and the host's Docker socket mounted.
    env = {**_env([], tmp_path), "CLOTHING_BUILDER": "always", "DOCKER_HOST": "unix:///run/test/docker.sock"}
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", "--tag", "abc123", "up"], env=env)
    commands = _commands(result.stdout)
    build = next(c for c in commands if c.startswith("docker build"))
    assert "--platform linux/amd64" in build
    assert re.search(r"-t clothing-builder:\d+ \S+/deploy/builder$", build), build
    (inside,) = (c for c in commands if c.startswith("docker run"))
    assert re.search(
        r"-v \S+:/src -v clothing-builder-cache:/cache -v /run/test/docker.sock:/var/run/docker.sock", inside
    )
    assert "-e IMAGE_TAG" in inside
    assert inside.endswith(
        "flock /cache/builder.lock ./pants --no-pantsd --pants-workdir=/cache/pants.d "
        "--no-dynamic-ui package deploy/images/gateway deploy/images/model"
    )
    assert not any(re.match(r"env IMAGE_TAG=\S+ \./pants", c) for c in commands)

    # EKS: built in the builder, pushed from the host (which holds the registry login).
    result = run(["bash", WORKFLOWS["eks"], "--dry-run", "--tag", "abc123", "up"], env=env)
    commands = _commands(result.stdout)
    (inside,) = (c for c in commands if c.startswith("docker run"))
    assert "docker-registries" in inside
    assert inside.endswith("package deploy/images/gateway deploy/images/model")
    pushes = [c for c in commands if c.startswith("docker push")]
    assert [p.rsplit("/", 1)[1] for p in pushes] == ["clothing-gateway:abc123", "clothing-model:abc123"]


def test_an_unknown_builder_choice_is_refused(tmp_path: Path) -> None:
    env = {**_env([], tmp_path), "CLOTHING_BUILDER": "sometimes"}
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", "--tag", "t", "up"], env=env, check=False)
    assert result.returncode != 0
    assert "CLOTHING_BUILDER must be auto, always or never, not sometimes" in result.stderr


def _fake_versions(tmp_path: Path, versions: dict[str, str]) -> Path:
    """Tools that answer their version query with the given text and record every call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in versions.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls"\necho "{text}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


CURRENT = {
    "docker": "Docker version 27.3.1, build ce12230",
    "kind": "kind v0.33.0 go1.25.4 linux/amd64",
    "kubectl": "Client Version: v1.35.0",
    "curl": "curl 8.5.0",
    "aws": "aws-cli/2.22.0 Python/3.12.6 Linux/6.1 exe/x86_64",
    "eksctl": "0.230.0",
}


@pytest.mark.parametrize(
    ("name", "tool", "old", "message"),
    [
        ("kind", "kind", "kind v0.23.0 go1.22.2 linux/amd64", "kind 0.23.0 is too old: need >= 0.33.0"),
        ("kind", "kubectl", "Client Version: v1.30.2", "kubectl 1.30.2 is too old: need >= 1.34"),
        ("eks", "eksctl", "0.210.0", "eksctl 0.210.0 is too old: need >= 0.222.0"),
        ("eks", "aws", "aws-cli/1.36.4 Python/3.11", "aws 1.36.4 is too old: need >= 2.0"),
    ],
)
def test_a_too_old_tool_stops_the_script_before_anything_runs(
    tmp_path: Path, name: str, tool: str, old: str, message: str
) -> None:
    bin_dir = _fake_versions(tmp_path, {**CURRENT, tool: old})
    env = {**_env([bin_dir], tmp_path), "CLOTHING_BUILDER": "always"}
    result = run(["bash", WORKFLOWS[name], "--tag", "t", "up"], env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    _only_version_queries(tmp_path)


def test_current_tools_pass_the_checks(tmp_path: Path) -> None:
    bin_dir = _fake_versions(tmp_path, CURRENT)
    env = {**_env([bin_dir], tmp_path), "CLOTHING_BUILDER": "always"}
    for name in WORKFLOWS:
        result = run(["bash", WORKFLOWS[name], "--dry-run", "--tag", "t", "up"], env=env)
        assert "prerequisite" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("name", "command"), [("kind", "up"), ("eks", "up"), ("eks", "url"), ("eks", "down")]
)
def test_every_kubectl_command_names_its_context(tmp_path: Path, name: str, command: str) -> None:
    # Never the kubeconfig's current context: after kind.sh that would be kind's cluster.
    result = run(
        ["bash", WORKFLOWS[name], "--dry-run", "--region", "us-east-2", "--tag", "t", command]
        if name == "eks"
        else ["bash", WORKFLOWS[name], "--dry-run", "--tag", "t", command],
        env=_env([], tmp_path),
    )
    context = "kind-clothing" if name == "kind" else "eks-clothing-us-east-2"
    kubectl = [c for c in _commands(result.stdout) if c.startswith("kubectl")]
    assert kubectl
    for c in kubectl:
        assert c.startswith(f"kubectl --context {context} "), c
    assert not any("use-context" in c for c in _commands(result.stdout))
    if name == "eks":
        # The context exists under that name before it is used.
        commands = _commands(result.stdout)
        alias = next(i for i, c in enumerate(commands) if f"--alias {context}" in c)
        assert alias < commands.index(kubectl[0])


def test_the_metrics_server_patch_can_be_applied_again(tmp_path: Path) -> None:
    # An "add" to the argument list appends a duplicate on every `up`; a "replace" is idempotent.
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", "--tag", "t", "up"], env=_env([], tmp_path))
    (patch,) = (c for c in _commands(result.stdout) if "patch deployment metrics-server" in c)
    script = (DEPLOY_DIR / "kind/kind.sh").read_text()
    value = re.search(r"^METRICS_SERVER_ARGS_PATCH='(.+)'$", script, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    ops = json.loads(value)
    assert [op["op"] for op in ops] == ["replace"]
    args = ops[0]["value"]
    assert "--kubelet-insecure-tls" in args
    assert len(args) == len(set(args))
    # metrics-server v0.7.2's own arguments are kept.
    assert "--secure-port=10250" in args
    assert "--cert-dir=/tmp" in args
    assert "v0.7.2" in script
    assert '\\"replace\\"' in patch


def _tag_in(repo: Path) -> str:
    return run(["bash", "-c", 'source deploy/lib.sh && default_tag'], cwd=repo, env=_env([])).stdout.strip()


def test_every_dirty_tree_gets_a_tag_of_its_own(tmp_path: Path) -> None:
    # A reused tag is not pulled again (IfNotPresent) and `kubectl apply` sees no change.
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    (repo / "deploy/lib.sh").write_text((DEPLOY_DIR / "lib.sh").read_text())
    (repo / "model.txt").write_text("one\n")
    git: list[str | Path] = ["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"]
    git += ["-c", "commit.gpgsign=false"]
    run([*git, "init", "-q"])
    run([*git, "add", "."])
    run([*git, "commit", "-q", "-m", "first"])
    clean = _tag_in(repo)
    assert re.fullmatch(r"[0-9a-f]{12}", clean)

    (repo / "model.txt").write_text("two\n")
    first = _tag_in(repo)
    assert re.fullmatch(rf"{clean}-dirty-[0-9a-f]{{12}}", first)
    assert _tag_in(repo) == first  # the same content, the same tag
    (repo / "model.txt").write_text("three\n")
    second = _tag_in(repo)
    assert second not in (clean, first)
    (repo / "new.txt").write_text("untracked\n")
    third = _tag_in(repo)
    assert third not in (clean, first, second)
    (repo / "new.txt").write_text("untracked, edited\n")
    assert _tag_in(repo) not in (clean, first, second, third)
    (repo / "new.txt").unlink()
    (repo / "model.txt").write_text("one\n")
    assert _tag_in(repo) == clean


def test_the_load_test_runs_as_the_docs_and_scripts_show_it() -> None:
    # docs/deploy.md and kind.sh's hints run `./pants loadtest -- --url ...`: the alias must exist
    # (launcher_checks holds every alias to a target that exists).
    aliases = tomllib.loads((REPO_ROOT / "pants.toml").read_text())["cli"]["alias"]
    assert aliases["loadtest"] == "run src/python/loadtest:loadtest"
    assert "./pants loadtest -- --url" in (REPO_ROOT / "docs/deploy.md").read_text()
    assert "./pants loadtest -- --url" in (DEPLOY_DIR / "kind/kind.sh").read_text()


# --- --model PATH: the user's own model ---------------------------------------------------------

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _model_file(tmp_path: Path, name: str = "xception_v4_large_08_0.894.h5") -> Path:
    # Only the signature matters to the scripts; the export tool reads the rest.
    path = tmp_path / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HDF5_MAGIC + b"\0" * 64)
    return path


def _up(name: str, *args: str) -> list[str]:
    command = ["bash", str(WORKFLOWS[name]), "--dry-run"]
    if name == "eks":
        command += ["--region", "us-east-2"]
    return [*command, *args, "up"]


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_model_exports_the_users_file_into_the_model_image_before_the_gateway(
    tmp_path: Path, name: str
) -> None:
    model = _model_file(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    result = run(
        _up(name, "--tag", "abc123", "--model", str(model), "--labels", str(labels),
            "--family", "resnet50", "--target-size", "224x224"),
        env=_env([], tmp_path),
    )  # fmt: skip
    commands = _commands(result.stdout)
    builds = [c for c in commands if re.match(r"env IMAGE_TAG=\S+ .*\./pants .*package ", c)]
    # The model image alone first (its export checks the file), then the gateway's.
    assert [b.rsplit(" package ", 1)[1] for b in builds] == ["deploy/images/model", "deploy/images/gateway"]
    model_build = builds[0]
    digest = run(["sha256sum", model]).stdout.split()[0]
    for variable in (
        f"CLOTHING_MODEL={model}",
        f"CLOTHING_MODEL_SHA256={digest}",
        f"CLOTHING_MODEL_LABELS={labels}",
        "CLOTHING_MODEL_FAMILY=resnet50",
        "CLOTHING_MODEL_TARGET_SIZE=224x224",
    ):
        assert f" {variable} " in model_build, model_build
    # The images are built before anything else happens.
    assert commands.index(builds[1]) == 1


def test_the_model_build_file_exports_what_the_environment_names(tmp_path: Path) -> None:
    # deploy/images/model/BUILD reads the variables the scripts set; Pants evaluates it the same way.
    build = (DEPLOY_DIR / "images/model/BUILD").read_text()
    for suffix in ("", "_LABELS", "_FAMILY", "_TARGET_SIZE"):
        variable = f"CLOTHING_MODEL{suffix}"
        assert f'env("{variable}", "")' in build
    assert '"CLOTHING_MODEL_SHA256"' in build  # keys the cached export on the file's content


def test_another_model_gets_another_tag(tmp_path: Path) -> None:
    # The nodes keep an image they hold under a tag (IfNotPresent): a new model needs a new tag.
    def tag_of(*args: str) -> str:
        result = run(_up("kind", *args), env=_env([], tmp_path))
        (load,) = (c for c in _commands(result.stdout) if c.startswith("kind load"))
        return load.rsplit(":", 1)[1]

    plain = tag_of()
    model = _model_file(tmp_path)
    first = tag_of("--model", str(model))
    assert re.fullmatch(rf"{re.escape(plain)}-model-[0-9a-f]{{12}}", first)
    assert tag_of("--model", str(model)) == first
    model.write_bytes(HDF5_MAGIC + b"\1" * 64)
    second = tag_of("--model", str(model))
    assert second != first
    assert tag_of("--model", str(model), "--family", "resnet50") not in (first, second)
    assert tag_of("--tag", "mine", "--model", str(model)) == "mine"


def test_the_builder_reads_the_model_through_a_read_only_mount(tmp_path: Path) -> None:
    model = _model_file(tmp_path)
    env = {**_env([], tmp_path), "CLOTHING_BUILDER": "always"}
    result = run(_up("kind", "--tag", "t", "--model", str(model)), env=env)
    runs = [c for c in _commands(result.stdout) if c.startswith("docker run")]
    assert [r.rsplit(" package ", 1)[1] for r in runs] == ["deploy/images/model", "deploy/images/gateway"]
    mount = f"-v {model}:/clothing-model-input/{model.name}:ro"
    assert mount in runs[0]
    assert f"-e CLOTHING_MODEL=/clothing-model-input/{model.name}" in runs[0]


def _bad_models(tmp_path: Path) -> list[tuple[Path, str]]:
    text = tmp_path / "notes.h5"
    text.write_text("not a model\n")
    keras = tmp_path / "model.keras"
    keras.write_bytes(HDF5_MAGIC)
    other = tmp_path / "model.pkl"
    other.write_bytes(b"\x80\x04")
    folder = tmp_path / "folder"
    folder.mkdir()
    return [
        (tmp_path / "missing.h5", "no such file or directory"),
        (text, "not an HDF5 file"),
        (keras, "not a zip archive"),
        (other, "not a Keras model file"),
        (folder, "without saved_model.pb"),
    ]


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_a_file_that_is_no_model_stops_before_anything_runs(tmp_path: Path, name: str) -> None:
    # Every tool is there and current: only the file stops the script, with one line.
    bin_dir = _fake_versions(tmp_path, CURRENT)
    env = {**_env([bin_dir], tmp_path), "CLOTHING_BUILDER": "always"}
    for path, problem in _bad_models(tmp_path):
        result = run(["bash", WORKFLOWS[name], "--model", str(path), "up"], env=env, check=False)
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"{name}.sh: error: --model {path}: ")
        assert problem in line
        _only_version_queries(tmp_path)


def test_the_export_tools_reason_is_the_scripts_one_line(tmp_path: Path) -> None:
    # A file with the right signature that the export refuses (here: weights only): the script
    # stops after the model image's build with the export's line, before the gateway's.
    model = _model_file(tmp_path)
    reason = f"export: error: {model}: the HDF5 file holds no model configuration (weights only?)"
    bin_dir = _fake_versions(tmp_path, CURRENT)
    docker = bin_dir / "docker"
    docker.write_text(
        f'#!/bin/sh\necho "docker $*" >> "{tmp_path}/calls"\n'
        'case "$1" in\n'
        '  -v|--version) echo "Docker version 27.3.1" ;;\n'
        '  image) exit 0 ;;\n'
        f'  run) echo "ProcessExecutionFailure: Running export failed"; echo "{reason}"; exit 1 ;;\n'
        "esac\n"
    )
    env = {**_env([bin_dir], tmp_path), "CLOTHING_BUILDER": "always"}
    result = run(["bash", WORKFLOWS["kind"], "--tag", "t", "--model", str(model), "up"], env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.rstrip().splitlines()[-1] == f"kind.sh: error: --model {model}: {reason}"
    calls = (tmp_path / "calls").read_text()
    assert calls.count("docker run") == 1  # the model image's build only
    assert "kind create" not in calls


def test_model_options_need_a_model(tmp_path: Path) -> None:
    result = run(_up("kind", "--family", "resnet50"), env=_env([], tmp_path), check=False)
    assert result.returncode == 1
    assert "describe the file given with --model PATH" in result.stderr
    model = _model_file(tmp_path)
    result = run(
        _up("kind", "--model", str(model), "--target-size", "big"), env=_env([], tmp_path), check=False
    )
    assert result.returncode == 1
    assert "--target-size big: expected HxW" in result.stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("url", [r"aws eks update-kubeconfig .*--alias eks-clothing-us-east-2",
                 r"kubectl --context eks-clothing-us-east-2 -n clothing get service gateway"]),
        ("down", [r"aws eks update-kubeconfig .*--alias eks-clothing-us-east-2",
                  r"kubectl --context eks-clothing-us-east-2 delete -k \S+ --ignore-not-found",
                  r"eksctl delete cluster -f \S+ --wait"]),
    ],
)  # fmt: skip
def test_eks_url_and_down_print_their_whole_sequence(
    tmp_path: Path, command: str, expected: list[str]
) -> None:
    result = run(
        ["bash", WORKFLOWS["eks"], "--dry-run", "--region", "us-east-2", "--tag", "t", command],
        env=_env([], tmp_path),
    )
    commands = _commands(result.stdout)
    assert len(commands) == len(expected), commands
    for c, pattern in zip(commands, expected, strict=True):
        assert re.match(pattern, c), (c, pattern)


def test_kind_down_deletes_only_its_cluster(tmp_path: Path) -> None:
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", "down"], env=_env([], tmp_path))
    assert _commands(result.stdout) == ["kind delete cluster --name clothing"]


# --- Canary rollouts: canary PERCENT, promote, rollback -------------------------------------------


def _model_config(stable: int, canary: int, *versions: int) -> str:
    script = f"source deploy/lib.sh && model_config {stable} {canary} {' '.join(map(str, versions))}"
    return run(["bash", "-c", script], cwd=REPO_ROOT, env=_env([])).stdout


def test_the_base_model_config_is_what_the_scripts_write() -> None:
    # One form for every label map, so a command can tell which step of a rollout a cluster is at.
    assert (DEPLOY_DIR / "base/models.config").read_text() == _model_config(1, 1, 1)
    two = _model_config(1, 2, 1, 2)
    assert "model_version_policy { specific { versions: 1 versions: 2 } }" in two
    assert 'version_labels { key: "stable" value: 1 }' in two
    assert 'version_labels { key: "canary" value: 2 }' in two


def test_the_scripts_wait_for_the_poll_interval_the_deployment_sets() -> None:
    manifests = load_documents(run([tool("kubectl"), "kustomize", DEPLOY_DIR / "base"]).stdout)
    (tf_serving,) = (
        c for d in manifests if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] == "tf-serving"
    )  # fmt: skip
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in tf_serving["args"])
    lib = (DEPLOY_DIR / "lib.sh").read_text()
    poll = re.search(r"^MODEL_CONFIG_POLL=(\d+)", lib, flags=re.MULTILINE)
    mount = re.search(r"^MODEL_CONFIG_MOUNT=(\S+)", lib, flags=re.MULTILINE)
    assert poll is not None
    assert mount is not None
    assert flags["model_config_file_poll_wait_seconds"] == poll.group(1)
    assert flags["model_config_file"] == f"{mount.group(1)}/models.config"


@pytest.mark.parametrize("version", [None, 3])
def test_up_serves_the_baked_version_under_both_labels(tmp_path: Path, version: int | None) -> None:
    args = ["--model-version", str(version)] if version else []
    result = run(_up("kind", "--tag", "t", *args), env=_env([], tmp_path))
    manifests = _render_generated(result.stdout, tmp_path)
    config = one(manifests, "ConfigMap", "tf-serving-models")
    assert config["data"]["models.config"] == _model_config(version or 1, version or 1, version or 1)
    # Not hash-suffixed: the Deployment's volume names it, and commands patch it in place.
    assert config["metadata"]["name"] == "tf-serving-models"
    build = next(c for c in _commands(result.stdout) if " package " in c)
    assert (f" CLOTHING_MODEL_VERSION={version} " in build) == (version is not None)


def test_a_canary_model_is_baked_as_the_next_version(tmp_path: Path) -> None:
    model = _model_file(tmp_path)
    canary = _model_file(tmp_path, "candidate.keras")
    canary.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    result = run(
        _up("kind", "--tag", "t", "--model", str(model), "--model-version", "4",
            "--canary-model", str(canary)),  # fmt: skip
        env=_env([], tmp_path),
    )
    (model_build,) = (c for c in _commands(result.stdout) if c.endswith(" package deploy/images/model"))
    digest = run(["sha256sum", canary]).stdout.split()[0]
    canary_variables = [f"CLOTHING_CANARY_MODEL={canary}", f"CLOTHING_CANARY_MODEL_SHA256={digest}"]
    for variable in (f"CLOTHING_MODEL={model}", "CLOTHING_MODEL_VERSION=4", *canary_variables):
        assert f" {variable} " in model_build, model_build
    # The model image's BUILD exports it as version 4 + 1 (images_test.py checks the BUILD).
    missing = tmp_path / "missing.h5"
    bad = run(_up("kind", "--canary-model", str(missing)), env=_env([], tmp_path), check=False)
    assert bad.returncode == 1
    assert f"--canary-model {tmp_path / 'missing.h5'}: no such file or directory" in bad.stderr
    bad = run(_up("kind", "--model-version", "v2"), env=_env([], tmp_path), check=False)
    assert bad.returncode == 1
    assert "--model-version v2: expected a version number" in bad.stderr


def _assert_sequence(commands: list[str], expected: list[str]) -> None:
    """Each pattern matches a command after the one the previous pattern matched."""
    rest = iter(commands)  # shared: each search goes on from where the previous one stopped
    for pattern in expected:
        assert any(re.match(pattern, c) for c in rest), (pattern, commands)


def _patches(stdout: str) -> list[str]:
    """The model configs a dry run patches into the ConfigMap, in order."""
    configs = []
    for command in _commands(stdout):
        if "patch configmap tf-serving-models" in command:
            patch = json.loads(_printed_file(stdout, Path(command.rsplit(" ", 1)[1])))
            configs.append(patch["data"]["models.config"])
    return configs


def _rollout(name: str, tmp_path: Path, *command: str) -> str:
    region = ["--region", "us-east-2"] if name == "eks" else []
    return run(["bash", WORKFLOWS[name], "--dry-run", *region, *command], env=_env([], tmp_path)).stdout


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_canary_loads_the_new_version_before_labelling_it_then_splits(tmp_path: Path, name: str) -> None:
    stdout = _rollout(name, tmp_path, "canary", "10")
    context = "kind-clothing" if name == "kind" else "eks-clothing-us-east-2"
    k = f"kubectl --context {context} -n clothing"
    _assert_sequence(_commands(stdout), [
        rf"{k} exec deployment/tf-serving -c tf-serving -- ls /models/clothing-model",
        rf"{k} get configmap tf-serving-models",
        rf"{k} patch configmap tf-serving-models --type merge --patch-file \S+",
        rf"{k} exec <pod> -c tf-serving -- cat /etc/tf-serving/models/models.config",
        r"sleep 20",
        rf"{k} exec <pod> -c tf-serving -- /usr/local/bin/model-ready 2",
        rf"{k} patch configmap tf-serving-models",
        rf"{k} set env deployment/gateway -c gateway GATEWAY_CANARY_PERCENT=10",
        rf"{k} rollout status deployment/gateway",
    ])  # fmt: skip
    # TF Serving refuses a label on a version that is not AVAILABLE: load 2 first, then label it.
    assert _patches(stdout) == [_model_config(1, 1, 1, 2), _model_config(1, 2, 1, 2)]


def test_promote_labels_the_canary_stable_unloads_the_old_version_and_ends_the_split(tmp_path: Path) -> None:
    stdout = _rollout("kind", tmp_path, "promote")
    assert _patches(stdout) == [_model_config(2, 2, 2)]
    commands = _commands(stdout)
    _assert_sequence(commands, [r".* exec <pod> .*model-ready 2", r".* patch configmap", r".* set env .*=0$"])


def test_rollback_ends_the_split_only_once_the_canary_left_every_pod(tmp_path: Path) -> None:
    stdout = _rollout("kind", tmp_path, "rollback")
    assert _patches(stdout) == [_model_config(1, 1, 1)]
    # At 0 % the gateway asks for the latest version: version 2 must be gone first.
    _assert_sequence(_commands(stdout), [
        r".* exec <pod> .*model-ready 1", r".* patch configmap", r".* exec <pod> .*model-ready 2",
        r".* set env deployment/gateway -c gateway GATEWAY_CANARY_PERCENT=0",
    ])  # fmt: skip
    assert "reports version 2 gone" in run(
        ["bash", WORKFLOWS["kind"], "--dry-run", "rollback"], env=_env([], tmp_path)
    ).stderr


@pytest.mark.parametrize("percent", ["0", "101", "ten", ""])
def test_canary_takes_a_percent_from_1_to_100(tmp_path: Path, percent: str) -> None:
    args = ["canary", percent] if percent else ["canary"]
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", *args], env=_env([], tmp_path), check=False)
    assert result.returncode == 2
    assert "canary PERCENT: a whole number from 1 to 100" in result.stderr
    assert _commands(result.stdout) == []


def test_eks_rollout_commands_write_their_context_first(tmp_path: Path) -> None:
    commands = _commands(_rollout("eks", tmp_path, "promote"))
    assert commands[0].startswith("aws eks update-kubeconfig --name clothing --region us-east-2 --alias")


def _fake_kubectl(tmp_path: Path, current: str, versions: str) -> Path:
    """A kubectl holding one ConfigMap and one tf-serving pod: `patch` stores the config, `exec ...
    cat` shows it as mounted, model-ready answers from the versions the config lists."""
    bin_dir = _fake_versions(tmp_path, {k: v for k, v in CURRENT.items() if k != "kubectl"})
    state = tmp_path / "models.config"
    state.write_text(current)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"""#!/usr/bin/env python3
import json, re, sys
from pathlib import Path
args = sys.argv[1:]
with open("{tmp_path}/calls", "a") as calls:
    calls.write("kubectl " + " ".join(args) + "\\n")
state = Path("{state}")
if "version" in args and "--client" in args:
    print("Client Version: v1.35.0")
elif "ls" in args:
    print("\\n".join("{versions}".split()))
elif "get" in args and "configmap" in args:
    sys.stdout.write(state.read_text())
elif "get" in args and "pods" in args:
    print("pod/tf-serving-a")
elif "patch" in args:
    state.write_text(json.loads(Path(args[-1]).read_text())["data"]["models.config"])
elif "cat" in args:
    sys.stdout.write(state.read_text())
elif "/usr/local/bin/model-ready" in args:
    loaded = re.search(r"specific \\{{(.*?)\\}}", state.read_text()).group(1).split()[1::2]
    sys.exit(0 if args[-1] in loaded else 1)
""")
    kubectl.chmod(0o755)
    return bin_dir


def test_promote_on_a_cluster_reads_the_versions_and_the_current_labels(tmp_path: Path) -> None:
    # Not a dry run: a kubectl stand-in answers, so the script's own reading of the image's
    # versions and of the ConfigMap is what decides. From the canary step, promote is one config.
    bin_dir = _fake_kubectl(tmp_path, _model_config(5, 6, 5, 6), "5 6 README")
    result = run(["bash", WORKFLOWS["kind"], "promote"], env=_env([bin_dir], tmp_path), timeout=120)
    assert "versions 5 (stable) and 6 (canary); the model config is at 'canary'" in result.stderr
    assert (tmp_path / "models.config").read_text() == _model_config(6, 6, 6)
    calls = (tmp_path / "calls").read_text()
    assert "set env deployment/gateway -c gateway GATEWAY_CANARY_PERCENT=0" in calls


def test_a_rollout_refuses_a_config_it_did_not_write_and_an_image_with_one_version(tmp_path: Path) -> None:
    bin_dir = _fake_kubectl(tmp_path, "model_config_list { }\n", "1 2")
    result = run(["bash", WORKFLOWS["kind"], "rollback"], env=_env([bin_dir], tmp_path), check=False)
    assert result.returncode == 1
    assert "holds a model config these commands did not write" in result.stderr
    assert "patch" not in (tmp_path / "calls").read_text()
    bin_dir = _fake_kubectl(tmp_path, _model_config(1, 1, 1), "1")
    result = run(["bash", WORKFLOWS["kind"], "canary", "10"], env=_env([bin_dir], tmp_path), check=False)
    assert result.returncode == 1
    assert "holds version(s) 1 of clothing-model: a rollout needs two" in result.stderr
    assert "(build it with up --canary-model FILE)" in result.stderr
