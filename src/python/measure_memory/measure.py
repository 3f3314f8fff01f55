"""Measures the two tiers' memory, to size the Kubernetes requests and limits (docs/deploy.md).

    ./pants run src/python/export:export -- demo --kind xception --base /tmp/m/models
    ./pants package src/python/model_server:model_server src/python/gateway:gateway
    ./pants measure-memory -- --model-base-path /tmp/m/models/clothing-model \\
        --model-server dist/src.python.model_server/model_server.pex \\
        --gateway dist/src.python.gateway/gateway.pex

Starts the local model server (the TF runtime TF Serving uses, with the model image's batching
file and the Deployment's thread settings) and the gateway (with deploy/base's gateway-config)
on loopback, then reports the resident
set size (RSS) of each process tree: after the model is loaded and warmed up, with the gateway
idle, the peak while the load test (`./pants loadtest`) sends the course's POST /predict {"url": ...} for
--duration seconds from --concurrency threads (the gateway fetches a generated JPEG from a
loopback server), and after the load. Standard library only; the JPEG is made with the gateway
PEX's own Pillow. Run it from the repository root: it reads deploy/'s files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from clothing_preproc.signature import COURSE_MODEL_NAME
from loadtest import load
from loadtest.loopback_image import serve_image

MODEL_NAME = COURSE_MODEL_NAME
MIB = 1024 * 1024


def deploy_dir() -> Path:
    """The checkout's deploy/ (the batching file, gateway-config): beside these sources when they
    are the checkout's (the tests' sandbox keeps its layout), else in the working directory, which
    `./pants measure-memory` sets to the repository root (this module then runs from a PEX)."""
    here = Path(__file__).resolve()
    for root in (*here.parents[3:4], Path.cwd()):
        if (root / "deploy/base/kustomization.yaml").is_file():
            return root / "deploy"
    raise FileNotFoundError(f"deploy/base/kustomization.yaml not found above {here} nor in {Path.cwd()}")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with suppress(OSError):  # the thread or process ended meanwhile
            kids += [int(k) for k in task.read_text().split()]
    return kids


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (VmRSS from /proc; 0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        todo += _children(current)
    return total


@dataclass
class PeakSampler:
    """Samples tree_rss() of some processes every `interval` seconds, keeping the maximum."""

    pids: dict[str, int]
    interval: float = 0.1
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks.get(name, 0), tree_rss(pid))
            self._stop.wait(self.interval)

    @contextmanager
    def running(self) -> Iterator[PeakSampler]:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
            return int(response.status), response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


def _wait(what: str, process: subprocess.Popen[bytes], ready: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if process.poll() is not None:
            raise SystemExit(f"measure_memory: {what} exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"measure_memory: {what} not ready within {timeout:g} s")
        time.sleep(0.5)


def _model_available(rest_port: int) -> bool:
    status, body = _get(f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}")
    return status == 200 and b'"AVAILABLE"' in body


@contextmanager
def _process(args: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        # The commands are the ones this script was given (the packaged PEX files).
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _jpeg(gateway_pex: Path, python: str, width: int, height: int) -> bytes:
    # A photo-sized JPEG of smooth gradients plus noise, made with the gateway's own Pillow.
    code = (
        "import io, random, sys; from PIL import Image, ImageFilter; "
        f"w, h = {width}, {height}; random.seed(0); "
        "img = Image.effect_noise((w, h), 40).convert('RGB'); "
        "img = Image.blend(img, Image.linear_gradient('L').resize((w, h)).convert('RGB'), 0.6); "
        "out = io.BytesIO(); img.save(out, format='JPEG', quality=90); "
        "sys.stdout.buffer.write(out.getvalue())"
    )
    env = {**os.environ, "PEX_INTERPRETER": "1"}
    # The gateway PEX the caller passed, run as an interpreter.
    args = [python, str(gateway_pex), "-c", code]
    return subprocess.run(args, env=env, check=True, capture_output=True).stdout  # noqa: S603


def deployed_gateway_env() -> dict[str, str]:
    """The literals of deploy/base's gateway-config, so the gateway runs with the pods' settings."""
    kustomization = (deploy_dir() / "base/kustomization.yaml").read_text()
    literals = re.finditer(r"^\s*- ([A-Z][A-Z0-9_]*)=(.*)$", kustomization, flags=re.MULTILINE)
    return {m.group(1): m.group(2) for m in literals}


def _mib(n: int) -> str:
    return f"{n / MIB:.0f} MiB"


def measure(ns: argparse.Namespace) -> dict[str, object]:
    python = ns.python
    grpc_port, rest_port, gateway_port = _free_port(), _free_port(), _free_port()
    logs = Path(tempfile.mkdtemp(prefix="measure-memory-"))
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PEX_", "GATEWAY_", "TF_SERVING_"))
    }
    image = _jpeg(ns.gateway, python, *ns.image_size)
    image_server, image_url = serve_image(image)
    result: dict[str, object] = {"image_bytes": len(image), "image_size": "x".join(map(str, ns.image_size))}
    result["gateway_env"] = deployed_gateway_env()
    # The model image's and the tf-serving Deployment's flags (deploy/images/model, deploy/base).
    model_args = [
        python, str(ns.model_server), "--port", str(grpc_port), "--rest_api_port", str(rest_port),
        "--bind_address", "127.0.0.1",
        "--model_name", MODEL_NAME, "--model_base_path", str(ns.model_base_path),
        "--enable_batching=true",
        "--batching_parameters_file", str(deploy_dir() / "images/model/batching_parameters.txt"),
        "--enable_model_warmup=true",
        "--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=2",
    ]  # fmt: skip
    gateway_env = {
        **base_env,
        **deployed_gateway_env(),
        "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_HOST": "127.0.0.1",
        "TF_SERVING_HOST": f"127.0.0.1:{grpc_port}",
        # The picture is served on loopback, which the SSRF policy refuses by default.
        "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    try:
        with _process(model_args, base_env, logs / "model_server.log") as model:
            start = time.monotonic()
            _wait("model server", model, lambda: _model_available(rest_port), 600)
            result["model_load_seconds"] = round(time.monotonic() - start, 1)
            time.sleep(ns.settle)
            result["model_loaded"] = tree_rss(model.pid)
            with _process([python, str(ns.gateway)], gateway_env, logs / "gateway.log") as gateway:
                url = f"http://127.0.0.1:{gateway_port}"
                _wait("gateway", gateway, lambda: _get(url + "/readyz")[0] == 200, 120)
                time.sleep(ns.settle)
                result["gateway_idle"] = tree_rss(gateway.pid)
                payload = load.Payload(json.dumps({"url": image_url}).encode(), "application/json")
                sampler = PeakSampler({"model": model.pid, "gateway": gateway.pid})
                with sampler.running():
                    results, elapsed = load.run(
                        url, payload, requests=load.MAX_REQUESTS, duration=ns.duration,
                        concurrency=ns.concurrency, out=sys.stderr,
                    )  # fmt: skip
                print(load.summary(results, elapsed), file=sys.stderr)
                time.sleep(ns.settle)
                model_after, gateway_after = tree_rss(model.pid), tree_rss(gateway.pid)
                result.update(
                    # TensorFlow may still grow while the last batches finish, after the sampling.
                    model_peak_under_load=max(sampler.peaks["model"], model_after),
                    model_after_load=model_after,
                    gateway_peak_under_load=max(sampler.peaks["gateway"], gateway_after),
                    gateway_after_load=gateway_after,
                    requests=len(results.latencies),
                    statuses={str(k): v for k, v in sorted(results.statuses.items())},
                    errors=dict(results.errors),
                    requests_per_second=round(len(results.latencies) / elapsed, 2),
                    concurrency=ns.concurrency,
                    duration=ns.duration,
                )
    finally:
        image_server.shutdown()
        image_server.server_close()
    print(f"logs: {logs}", file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="measure-memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-base-path", type=Path, required=True,
                        help="the model folder export wrote (<base>/clothing-model, holding version folders)")
    parser.add_argument("--model-server", type=Path, required=True, help="the model server's PEX")
    parser.add_argument("--gateway", type=Path, required=True, help="the gateway's PEX")
    parser.add_argument("--python", default="python3.11", help="interpreter to run the PEX files with")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default: 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent requests (default: 8)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(1000, 800), metavar=("W", "H"),
                        help="size of the JPEG the gateway fetches (default: 1000 800)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each reading")
    ns = parser.parse_args(argv)
    if not 0 < ns.duration <= 120 or not 0 < ns.concurrency <= 64:
        parser.error("--duration must be in (0, 120] and --concurrency in (0, 64]: this is a measurement")
    try:
        deploy_dir()
    except FileNotFoundError as e:
        parser.error(f"{e}: run it from the repository root")
    result = measure(ns)
    for key, value in result.items():
        shown = _mib(value) if isinstance(value, int) and key.startswith(("model_", "gateway_")) else value
        print(f"{key}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
