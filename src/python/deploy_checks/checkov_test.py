"""Checkov's Kubernetes and Dockerfile policies over what the project deploys: both overlays as
kustomize renders them, and every Dockerfile. Nothing may fail; a waived check carries its reason
next to it (a `checkov.io/skipN` annotation or a `# checkov:skip=` comment).

Checkov runs as a PEX from its own resolve (`:checkov`), offline (`--skip-download`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from deploy_checks.testlib import DEPLOY_DIR, REPO_ROOT, run, tool

OVERLAYS = ["kind", "eks"]
DOCKERFILES = sorted([*DEPLOY_DIR.glob("images/*/Dockerfile"), DEPLOY_DIR / "builder/Dockerfile"])
# The `:checkov` PEX, where Pants puts a runtime package dependency: its default output path.
CHECKOV = REPO_ROOT / "src.python.deploy_checks/checkov.pex"


def _checkov(tmp_path: Path, framework: str, files: list[Path]) -> dict[str, Any]:
    args: list[str | Path] = [sys.executable, CHECKOV, "--framework", framework, "--output", "json",
                              "--skip-download"]  # fmt: skip
    for f in files:
        args += ["--file", f]
    # HOME: where Checkov keeps its caches. Exit status 1 means findings: the JSON says which.
    result = run(args, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path, timeout=300,
                 check=False)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    # One report per framework; an empty scan prints a summary without results.
    (found,) = (r for r in (report if isinstance(report, list) else [report]) if r["check_type"] == framework)
    results: dict[str, Any] = found["results"]
    return results


def _rendered(tmp_path: Path, overlay: str) -> Path:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(run([tool("kubectl"), "kustomize", DEPLOY_DIR / overlay]).stdout)
    return path


def _describe(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})" for c in checks]


def _assert_clean(results: dict[str, Any]) -> None:
    assert not results["failed_checks"], _describe(results["failed_checks"])
    assert results["passed_checks"]
    for check in results["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment") or ""
        # A reason, not a bare id or "ok".
        assert len(reason.split()) >= 5, (check["check_id"], check["resource"], reason)


def test_the_rendered_overlays_pass_checkov(tmp_path: Path) -> None:
    results = _checkov(tmp_path, "kubernetes", [_rendered(tmp_path, overlay) for overlay in OVERLAYS])
    _assert_clean(results)
    # Both overlays were read, every kind of object in them checked.
    assert {Path(c["file_path"]).stem for c in results["passed_checks"]} == set(OVERLAYS)
    assert {c["resource"].split(".")[0] for c in results["passed_checks"]} >= {
        "Deployment", "Service", "ConfigMap"
    }


def test_the_dockerfiles_pass_checkov(tmp_path: Path) -> None:
    assert len(DOCKERFILES) == 4
    results = _checkov(tmp_path, "dockerfile", DOCKERFILES)
    _assert_clean(results)
    assert {Path(c["file_path"]).parent.name for c in results["passed_checks"]} == {
        p.parent.name for p in DOCKERFILES
    }


def test_checkov_finds_what_the_manifests_avoid(tmp_path: Path) -> None:
    # The overlay's Deployment with the pod's lockdown removed: Checkov must object.
    rendered = _rendered(tmp_path, "kind").read_text()
    loosened = rendered.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false").replace(
        "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"
    )
    assert loosened != rendered
    path = tmp_path / "loosened.yaml"
    path.write_text(loosened)
    failed = {c["check_id"] for c in _checkov(tmp_path, "kubernetes", [path])["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_22"} <= failed  # privilege escalation, read-only root filesystem
