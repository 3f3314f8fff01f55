"""The local stack as its packaged program (`local_stack.pex`) with the gateway's KServe v2 gRPC port
on, the images the tests send, and the gateway's own route as the reference answer."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from testing_support.ports import LOOPBACK, free_port
from testing_support.processes import RunningProcess
from testing_support.sample_images import photo_jpeg

# Where Pants puts the stack's PEX (runtime_package_dependencies) in the test's sandbox.
STACK_PEX = Path("src.python.local_stack/local_stack.pex")
MODEL_NAME = "clothing-model"
# Three photo-like JPEGs of different sizes: each gets its own scores.
IMAGES = [photo_jpeg(640, 480, seed=1), photo_jpeg(300, 500, seed=2), photo_jpeg(1200, 900, seed=3)]


@dataclass(frozen=True)
class Stack:
    url: str  # the gateway's HTTP address
    grpc_address: str  # the gateway's KServe v2 gRPC address (host:port)

    def own_logits(self, image: bytes) -> np.ndarray:
        """The gateway's own route's logits for `image`, as float32 (what every protocol must give)."""
        r = httpx.post(
            f"{self.url}/v1/classify?logits=true",
            content=image,
            headers={"content-type": "application/octet-stream"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return np.array(list(r.json()["logits"].values()), dtype=np.float32)


def _environment(extra: dict[str, str]) -> dict[str, str]:
    # The PEX runs on its own sys.path: nothing of this resolve (PYTHONPATH) or of the test's PEX
    # (PEX_*) may leak into it.
    leaks = ("PYTHONPATH", "PEX")
    keep = {k: v for k, v in os.environ.items() if k not in leaks and not k.startswith("PEX_")}
    return keep | extra


@contextlib.contextmanager
def start_stack(work: Path) -> Iterator[Stack]:
    """Start the stack with its files under `work`, yield it once ready, stop it (SIGTERM)."""
    port, grpc_port = free_port(), free_port()
    proc = RunningProcess(
        "local stack",
        [
            sys.executable, str(STACK_PEX.resolve()),
            "--host", LOOPBACK, "--port", str(port),
            "--grpc-port", str(free_port()), "--rest-port", "0",
            "--cache-dir", str(work / "cache"),
        ],  # fmt: skip
        _environment({"GATEWAY_GRPC_PORT": str(grpc_port), "TF_CPP_MIN_LOG_LEVEL": "2"}),
        work / "stack.log",
    )
    url = f"http://{LOOPBACK}:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        proc.wait_until(ready, timeout=600, what="ready")
        yield Stack(url=url, grpc_address=f"{LOOPBACK}:{grpc_port}")
    finally:
        # SIGTERM: the stack stops the gateway, then the model server.
        proc.stop(grace=60)
