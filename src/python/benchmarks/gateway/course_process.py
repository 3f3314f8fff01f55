"""Starting the baseline: the course's gateway under gunicorn sync workers, as the course deploys it."""

from __future__ import annotations

from pathlib import Path

import httpx

from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess, child_environment, python_module


def start_course_gateway(tf_serving: str, logs: Path, workers: int = 1) -> tuple[RunningProcess, str]:
    """`benchmarks.gateway.course_gateway:app` under gunicorn; returns the process and its base URL."""
    port = free_port()
    argv = python_module(
        "gunicorn", "--bind", f"{LOOPBACK}:{port}", "--workers", str(workers), "--log-level", "warning",
        "benchmarks.gateway.course_gateway:app",
    )  # fmt: skip
    process = RunningProcess(
        f"course gateway ({workers} workers)",
        argv,
        child_environment({"TF_SERVING_HOST": tf_serving}),
        logs / f"course-{workers}.log",
    )
    url = f"http://{LOOPBACK}:{port}"

    def up() -> bool:
        try:
            httpx.get(url, timeout=2)
            return True
        except httpx.HTTPError:
            return False

    process.wait_until(up, 60, "listening")
    return process, url
