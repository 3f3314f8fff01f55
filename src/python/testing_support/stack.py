"""The live stack for tests and benchmarks: a demo model export, the model server, the gateway.

    model = export_demo_model(workdir, "tiny")                 python -m export.cli demo …
    server = start_model_server(model, logs)                   python -m model_server …
    gateway = start_gateway(server.grpc_address, logs, {...})  python -m gateway (env settings)

Each `start_*` returns once the process answers its readiness check (the model AVAILABLE, the
gateway ready) and records how long that took (cold start). Processes are children of the caller
(`RunningProcess`), each stopped by its own pid. `LiveModelServer` keeps one model server's ports
across stops and starts. These modules start `python -m …` children, so the test or benchmark
target that uses them depends on the model server, export and gateway sources itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clothing_preproc.signature import COURSE_MODEL_NAME
from testing_support.available import model_available
from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import ProcessFailed, RunningProcess, child_environment, python_module

# TensorFlow's start-up notes (oneDNN, CUDA stubs) only fill the logs; errors still get through.
_QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2"}


@dataclass(frozen=True)
class ExportedModel:
    base: Path  # the --model_base_path: <base>/<version>/saved_model.pb
    kind: str


def export_demo_model(workdir: Path, kind: str = "tiny", *, timeout: float = 600.0) -> ExportedModel:
    """Export the seeded demo model of `kind` under `workdir/<kind>/clothing-model/1` (once)."""
    base = workdir / kind / COURSE_MODEL_NAME
    if (base / "1" / "saved_model.pb").exists():
        return ExportedModel(base, kind)
    proc = RunningProcess(
        f"export demo --kind {kind}",
        python_module(
            "export.cli", "demo", "--base", str(workdir / kind), "--kind", kind, "--name", COURSE_MODEL_NAME
        ),
        child_environment(_QUIET_TF),
        workdir / f"export-{kind}.log",
    )
    code = proc.wait(timeout)
    if code is None:
        proc.kill()
        raise ProcessFailed(f"exporting the {kind} demo model took over {timeout:g} s:\n{proc.log_tail()}")
    proc.stop()
    if code != 0:
        raise ProcessFailed(f"exporting the {kind} demo model failed ({code}):\n{proc.log_tail()}")
    return ExportedModel(base, kind)


@dataclass
class ModelServer:
    process: RunningProcess
    grpc_port: int
    rest_port: int
    model: ExportedModel
    ready_after: float = 0.0  # seconds from spawn to the model AVAILABLE

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def available(self) -> bool:
        """The model's status over REST says AVAILABLE (TF Serving answers 200 while loading too)."""
        return model_available(self.rest_port)

    def restart(self, logs: Path, timeout: float = 120.0) -> ModelServer:
        """A new model server on the same ports (what a restarted pod behind a Service looks like)."""
        self.process.stop()
        return start_model_server(
            self.model, logs, grpc_port=self.grpc_port, rest_port=self.rest_port, timeout=timeout
        )


def start_model_server(
    model: ExportedModel,
    logs: Path,
    *,
    grpc_port: int = 0,
    rest_port: int = 0,
    extra_args: tuple[str, ...] = (),
    timeout: float = 180.0,
    wait: bool = True,
) -> ModelServer:
    """The model server serving `model`; returns once the model is AVAILABLE unless `wait` is False."""
    grpc_port = grpc_port or free_port()
    rest_port = rest_port or free_port()
    argv = python_module(
        "model_server",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_name={COURSE_MODEL_NAME}",
        f"--model_base_path={model.base}",
        f"--bind_address={LOOPBACK}",
        *extra_args,
    )
    process = RunningProcess(
        "model server", argv, child_environment(_QUIET_TF), logs / f"model-server-{grpc_port}.log"
    )
    server = ModelServer(process, grpc_port, rest_port, model)
    if not wait:
        return server
    try:
        server.ready_after = process.wait_until(server.available, timeout, "serving the model")
    except ProcessFailed:
        process.stop()
        raise
    return server


@dataclass
class Gateway:
    process: RunningProcess
    port: int
    settings: Mapping[str, str] = field(default_factory=dict)
    ready_after: float = 0.0  # seconds from spawn to /readyz 200

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def listening(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


# A fixture's `start(tf_serving, {GATEWAY_…: …}, **start_gateway's keywords)`.
GatewayFactory = Callable[..., Gateway]


def start_gateway(
    tf_serving: str,
    logs: Path,
    settings: Mapping[str, str] | None = None,
    *,
    port: int = 0,
    wait_ready: bool = True,
    timeout: float = 60.0,
    descriptor_limit: int | None = None,
) -> Gateway:
    """The gateway on 127.0.0.1 talking to `tf_serving`; `settings` are GATEWAY_* variables.

    Image URLs on loopback are allowed (the tests' image host lives there): the SSRF policy refuses
    private addresses unless GATEWAY_FETCH_ALLOW_NETWORKS names them. `descriptor_limit` caps the
    process's open files and sockets (RLIMIT_NOFILE), to reach descriptor exhaustion cheaply.
    """
    port = port or free_port()
    env = {
        "TF_SERVING_HOST": tf_serving,
        "GATEWAY_HOST": LOOPBACK,
        "GATEWAY_PORT": str(port),
        "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "GATEWAY_LOG_LEVEL": "warning",
        **(settings or {}),
    }
    process = RunningProcess(
        "gateway",
        python_module("gateway", descriptor_limit=descriptor_limit),
        child_environment(env),
        logs / f"gateway-{port}.log",
    )
    gateway = Gateway(process, port, env)
    try:
        gateway.ready_after = process.wait_until(
            gateway.ready if wait_ready else gateway.listening,
            timeout,
            "ready" if wait_ready else "listening",
        )
    except ProcessFailed:
        process.stop()
        raise
    return gateway


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it holds; False if it still does not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def logs_dir(base: Path) -> Path:
    path = base / "logs"
    os.makedirs(path, exist_ok=True)
    return path


def demo_model(base: Path) -> Path:
    """The tiny demo model exported under `base` (once): its --model_base_path."""
    return export_demo_model(base, "tiny").base


class LiveModelServer:
    """The model server serving `model_dir` on fixed free ports; `stop()` and `start()` keep the ports."""

    def __init__(self, model_dir: Path, logs: Path | None = None) -> None:
        self.model_dir = model_dir
        self.logs = logs or logs_dir(model_dir.parent)
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.server: ModelServer | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self, timeout: float = 180.0) -> None:
        self.server = start_model_server(
            ExportedModel(self.model_dir, "demo"),
            self.logs,
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            timeout=timeout,
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.process.stop(15)
            self.server = None

    def __enter__(self) -> LiveModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
