"""Rendered Kubernetes manifests for deploy/'s tests: kustomize output, parsed and looked up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy_checks.testlib import DEPLOY_DIR, run, tool

Manifest = dict[str, Any]


def load_documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def render(overlay: str | Path) -> list[Manifest]:
    """`kubectl kustomize` of a directory (relative to deploy/), as parsed documents."""
    path = DEPLOY_DIR / overlay
    return load_documents(run([tool("kubectl"), "kustomize", path]).stdout)


def find(manifests: Sequence[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """The objects of one kind, optionally one name (a generated name matches its prefix)."""
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name or _generated_from(m, name))
    ]


def one(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _generated_from(manifest: Manifest, name: str) -> bool:
    # configMapGenerator appends "-<hash>" to the name.
    generated: str = manifest["metadata"]["name"]
    head, _, suffix = generated.rpartition("-")
    return head == name and len(suffix) == 10 and suffix.isalnum()


def containers(workload: Manifest) -> Iterator[Manifest]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]
