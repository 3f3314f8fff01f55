"""The monitoring bundle's files (deploy/monitoring/) and the Prometheus tools that check them."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The TensorFlow resolve has psutil without its stubs (types-psutil is in python-default only).
import psutil  # type: ignore[import-untyped, unused-ignore]

# The TensorFlow resolve has PyYAML without its stubs (types-PyYAML is in python-default only).
import yaml  # type: ignore[import-untyped, unused-ignore]

from deploy_checks.testlib import DEPLOY_DIR, apt_install

MONITORING_DIR = DEPLOY_DIR / "monitoring"
RULES_FILE = MONITORING_DIR / "rules" / "clothing-classifier.rules.yml"
RULES_TEST_FILE = MONITORING_DIR / "rules" / "clothing-classifier.rules.test.yml"
DASHBOARD_FILE = MONITORING_DIR / "dashboards" / "clothing-classifier.json"
COMPONENT_DIR = MONITORING_DIR / "kustomize"
PROMETHEUS_RULE_FILE = COMPONENT_DIR / "prometheus-rule.yaml"

# Debian's package, which ships both; Grafana is in no archive the machine reaches.
PROMETHEUS_PACKAGE = "prometheus"
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[str, ...]


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return groups


def recording_rules() -> list[str]:
    return [r["record"] for g in rule_groups() for r in g["rules"] if "record" in r]


def alert_names() -> list[str]:
    return [r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def panels() -> list[Panel]:
    """Every panel that queries Prometheus (rows hold none), with its queries."""
    return [
        Panel(p["title"], tuple(t["expr"] for t in p["targets"]))
        for p in _all_panels(dashboard()["panels"])
        if p["type"] != "row"
    ]


def _all_panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from _all_panels(item.get("panels", []))


def prometheus_tools() -> tuple[Path, Path]:
    """`prometheus` and `promtool`, installed from Debian's package if missing.

    The package's maintainer script would start a system Prometheus; a policy-rc.d that refuses
    every start is put in place for the install (if the machine has none), and a prometheus
    process the install started anyway is stopped by its pid.
    """
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        before = _prometheus_pids()
        made_policy = not _POLICY_RC.exists()
        if made_policy:
            _POLICY_RC.write_text("#!/bin/sh\n# No service starts while tests install packages.\nexit 101\n")
            _POLICY_RC.chmod(0o755)
        try:
            apt_install(PROMETHEUS_PACKAGE)
        finally:
            if made_policy:
                _POLICY_RC.unlink()
        for pid in _prometheus_pids() - before:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).terminate()
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        raise FileNotFoundError(f"apt-get install {PROMETHEUS_PACKAGE} left no prometheus/promtool on PATH")
    return Path(prometheus), Path(promtool)


def _prometheus_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "prometheus"}
