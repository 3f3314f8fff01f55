"""measure_memory's readings: process-tree RSS and the gateway settings it runs with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy_checks.k8s_manifests import one, render
from deploy_checks.testlib import run
from measure_memory import measure
from measure_memory.measure import MIB, deployed_gateway_env, tree_rss


def test_tree_rss_counts_the_children() -> None:
    before = tree_rss(os.getpid())
    assert before > 10 * MIB
    # A child holding 200 MiB of touched memory shows up in its parent's tree.
    code = "import time; b = bytearray(200 << 20); print(1, flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"1"
        assert tree_rss(os.getpid()) - before > 180 * MIB
        assert tree_rss(child.pid) > 200 * MIB
    finally:
        child.kill()
        child.wait()
    time.sleep(0.1)
    assert tree_rss(child.pid) == 0  # gone


def test_the_gateway_is_measured_with_what_the_pods_get() -> None:
    # The ConfigMap Kubernetes receives (rendered by kustomize) holds exactly what the script reads.
    config = one(render("base"), "ConfigMap", "gateway-config")["data"]
    assert deployed_gateway_env() == config
    assert {"GATEWAY_MAX_CONCURRENCY", "GATEWAY_PREPROCESS_THREADS"} <= set(config)


@pytest.mark.parametrize("args", [["--duration", "1000"], ["--concurrency", "0"]])
def test_unbounded_runs_are_refused(args: list[str]) -> None:
    # A process of its own, as `./pants measure-memory` runs it: the exit status and stderr are the CLI's.
    sources = Path(measure.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(sources)}
    args = ["--model-base-path", "m", "--model-server", "s", "--gateway", "g", *args]
    result = run([sys.executable, "-m", "measure_memory.measure", *args], env=env, check=False)
    assert result.returncode == 2
    assert "this is a measurement" in result.stderr
