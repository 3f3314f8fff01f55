"""The deploy scripts: valid bash, shellcheck-clean, a --dry-run that shows the whole workflow,
and a clear stop before doing anything when a prerequisite is missing."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from deploy_testlib import DEPLOY_DIR, REPO_ROOT, run, tool
from k8s_manifests import Manifest, load_documents, one

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
    # What the dry run printed is what the file holds.
    printed = "\n".join(line[4:] for line in stdout.splitlines() if line.startswith("#   "))
    assert load_documents(printed) == load_documents((overlay / "kustomization.yaml").read_text())
    return load_documents(run([tool("kubectl"), "kustomize", overlay]).stdout)


def test_kind_dry_run_prints_the_whole_workflow(tmp_path: Path) -> None:
    result = run(["bash", WORKFLOWS["kind"], "--dry-run", "--tag", "abc123", "up"], env=_env([], tmp_path))
    commands = _commands(result.stdout)
    # In order: build, cluster, load, metrics-server, apply, wait, smoke.
    expected = [
        r"env IMAGE_TAG=abc123 \./pants package deploy/images/gateway deploy/images/model",
        r"kind create cluster --name clothing --config \S+/deploy/kind/cluster\.yaml",
        r"kind load docker-image --name clothing clothing-gateway:abc123 clothing-model:abc123",
        r"kubectl --context kind-clothing apply -f \S+metrics-server\S+",
        r"kubectl --context kind-clothing -n kube-system patch deployment metrics-server",
        r"kubectl --context kind-clothing apply -k \S+",
        r"kubectl --context kind-clothing -n clothing rollout status deployment/tf-serving",
        r"kubectl --context kind-clothing -n clothing rollout status deployment/gateway",
        r"curl .*http://127\.0\.0\.1:8080/readyz",
    ]
    positions = [next(i for i, c in enumerate(commands) if re.match(p, c)) for p in expected]
    assert positions == sorted(positions), commands
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
    expected = [
        r"eksctl create cluster -f \S+",
        r"aws eks update-kubeconfig --name clothing --region us-east-2 --alias eks-clothing-us-east-2",
        r"aws ecr describe-repositories .*clothing-gateway .*\|\| "
        r"aws ecr create-repository .*clothing-gateway",
        r"aws ecr describe-repositories .*clothing-model .*\|\| aws ecr create-repository .*clothing-model",
        r"aws ecr get-login-password --region us-east-2 \| docker login --username AWS --password-stdin "
        + re.escape(registry),
        r"env IMAGE_TAG=abc123 \./pants .*docker-registries.* "
        r"publish deploy/images/gateway deploy/images/model",
        r"kubectl --context eks-clothing-us-east-2 apply -k \S+",
        r"kubectl --context eks-clothing-us-east-2 -n clothing rollout status deployment/tf-serving",
        r"kubectl --context eks-clothing-us-east-2 -n clothing get service gateway",
    ]
    positions = [next(i for i, c in enumerate(commands) if re.match(p, c)) for p in expected]
    assert positions == sorted(positions), commands
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
    (publish,) = (c for c in _commands(result.stdout) if " publish " in c)
    assert "True" in publish
    assert "true" not in publish


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
        "package deploy/images/gateway deploy/images/model"
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


def test_the_load_test_runs_as_the_docs_show_it() -> None:
    # docs/deploy.md runs `deploy/loadtest.py --url ...` directly.
    loadtest = DEPLOY_DIR / "loadtest.py"
    assert loadtest.read_text().startswith("#!/usr/bin/env python3\n")
    assert loadtest.stat().st_mode & stat.S_IXUSR
    assert "deploy/loadtest.py --url" in (REPO_ROOT / "docs/deploy.md").read_text()
