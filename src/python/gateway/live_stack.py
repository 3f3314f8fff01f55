"""A real model server process serving the tiny demo model, for the gateway's integration tests.

Started the way the local stack starts it (`python -m model_server` with this interpreter and
sys.path); the demo model is exported once per test session.
"""

from __future__ import annotations

import time
from pathlib import Path

from clothing_preproc.signature import COURSE_MODEL_NAME
from local_stack.children import Child, child_environment, describe_exit
from local_stack.model_dir import ensure_demo_model
from testing_support.available import model_available
from testing_support.ports import free_port


def demo_model(base: Path) -> Path:
    return ensure_demo_model(base, COURSE_MODEL_NAME, lambda message: None)


class LiveModelServer:
    """The local model server on fixed free ports; `stop()` and `start()` keep the ports."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.child: Child | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 180.0) -> None:
        self.child = Child(
            "model server",
            "model_server",
            [
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--bind_address=127.0.0.1",
                f"--model_name={COURSE_MODEL_NAME}",
                f"--model_base_path={self.model_dir}",
            ],
            child_environment({}),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.child.exit_code()
            if code is not None:
                raise RuntimeError(f"the model server {describe_exit(code)}")
            if model_available(self.rest_port):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the model server did not serve the model within {timeout:g} s")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(15)
            self.child = None

    def __enter__(self) -> LiveModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
