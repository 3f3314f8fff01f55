"""Start the model server and the gateway, wait until the gateway is ready, stop both in order."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx

from local_stack.children import Child, child_environment, describe_exit
from local_stack.errors import ChildFailed, PortInUse
from local_stack.model_dir import check_model_dir, ensure_demo_model, newest_description
from local_stack.settings import StackSettings

# TF Serving's Prometheus path (its default), which deploy/monitoring's scrape configs read.
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# How often --monitoring refreshes the gateway's model-ready gauge, as a kubelet's probe would.
_READINESS_INTERVAL = 5.0

# The gateway drains in-flight requests on SIGTERM (its own grace is 20 s by default).
_GATEWAY_GRACE = 25.0
_MODEL_SERVER_GRACE = 15.0


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def write_monitoring_config(path: Path) -> Path:
    """TF Serving's MonitoringConfig turning its Prometheus endpoint on, at its default path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = f'prometheus_config {{\n  enable: true\n  path: "{PROMETHEUS_PATH}"\n}}\n'
    path.write_text(config, encoding="utf-8")
    return path


class Stack:
    def __init__(self, settings: StackSettings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.stop_signal = ""  # the name of the signal that asked for the stop, said by stop()

    def _check_ports(self) -> None:
        s = self.settings
        wanted = [("gateway", "--port", "0.0.0.0" if s.host == "0.0.0.0" else "127.0.0.1", s.port)]  # noqa: S104
        if s.tf_serving is None:
            wanted.append(("model server gRPC", "--grpc-port", "127.0.0.1", s.grpc_port))
            if s.rest_port:
                wanted.append(("model server REST", "--rest-port", "127.0.0.1", s.rest_port))
        for what, flag, host, port in wanted:
            if port and not port_free(host, port):
                raise PortInUse(
                    f"port {port} ({what}) is in use, perhaps by another stack; choose another with {flag}"
                )

    def start(self) -> None:
        s = self.settings
        self._check_ports()
        if s.tf_serving is None:
            if s.model_dir is not None:
                model_dir = s.model_dir
                versions = check_model_dir(model_dir)
                self.say(f"serving {model_dir} (versions {', '.join(map(str, versions))})")
            else:
                model_dir = ensure_demo_model(s.demo_base, s.model_name, self.say)
            self.say(f"starting the model server (gRPC :{s.grpc_port}, REST :{s.rest_port or 'off'})")
            monitoring = []
            if s.monitoring:
                monitoring = [f"--monitoring_config_file={write_monitoring_config(s.monitoring_config)}"]
            self.children.append(
                Child(
                    "model server",
                    "model_server",
                    [
                        f"--port={s.grpc_port}",
                        f"--rest_api_port={s.rest_port}",
                        "--bind_address=127.0.0.1",
                        f"--model_name={s.model_name}",
                        f"--model_base_path={model_dir}",
                        *monitoring,
                    ],
                    child_environment({}),
                )
            )
            # 127.0.0.1, not localhost: the model server binds IPv4 loopback only.
            tf_serving = f"127.0.0.1:{s.grpc_port}"
            description = newest_description(model_dir)
        else:
            tf_serving = s.tf_serving
            description = None
            self.say(f"using TF Serving at {tf_serving}")
        self.say(f"starting the gateway on {s.host}:{s.port}")
        self.children.append(
            Child(
                "gateway",
                "gateway",
                [],
                child_environment(
                    {
                        "TF_SERVING_HOST": tf_serving,
                        "GATEWAY_MODEL_NAME": s.model_name,
                        "GATEWAY_HOST": s.host,
                        "GATEWAY_PORT": str(s.port),
                        # The page then says whether the served model is trained (the demo is not).
                        **({"GATEWAY_MODEL_DESCRIPTION": str(description)} if description else {}),
                        **({"GATEWAY_PREDICTION_LOG": s.prediction_log} if s.prediction_log else {}),
                        **({"GATEWAY_OTLP_ENDPOINT": s.traces_endpoint} if s.traces_endpoint else {}),
                    }
                ),
            )
        )

    def wait_ready(self) -> float:
        """Seconds until the gateway's /readyz says ready; ChildFailed if a child dies or time runs out."""
        start = time.monotonic()
        url = f"http://127.0.0.1:{self.settings.port}/readyz"
        reason = "not started"
        last_note = start
        while not self.stopping.is_set():
            self._check_children()
            try:
                r = httpx.get(url, timeout=5.0)
                if r.status_code == 200:
                    return time.monotonic() - start
                reason = str(r.json().get("reason", r.status_code))
            except (httpx.HTTPError, ValueError) as e:
                reason = f"gateway not answering yet ({type(e).__name__})"
            now = time.monotonic()
            if now - start > self.settings.ready_timeout:
                raise ChildFailed(f"not ready after {self.settings.ready_timeout:g} s: {reason}")
            if now - last_note > 10:
                self.say(f"still waiting ({now - start:.0f} s): {reason}")
                last_note = now
            self.stopping.wait(0.25)
        return time.monotonic() - start

    def _check_children(self) -> None:
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                raise ChildFailed(f"the {child.name} {describe_exit(code)}; its output is above")

    def observability(self) -> list[str]:
        """Where the prediction log and the metrics are, to tell the user once the stack is ready."""
        s = self.settings
        notes = []
        if s.prediction_log:
            where = "this output" if s.prediction_log == "-" else s.prediction_log
            notes.append(f"prediction log: {where} (read it with ./pants prediction-report)")
        if s.monitoring:
            notes.append(
                f"metrics: {s.url}/metrics and http://127.0.0.1:{s.rest_port}{PROMETHEUS_PATH} "
                "(Prometheus: deploy/monitoring/prometheus-local.yml)"
            )
        if s.traces_endpoint:
            notes.append(f"traces: every request's spans to {s.traces_endpoint}")
        return notes

    def run_until_stopped(self) -> None:
        """Block until Ctrl-C / SIGTERM (returns) or a child exits (ChildFailed). With --monitoring,
        the gateway's /readyz is asked every few seconds, which keeps its gateway_model_ready gauge
        (the model-not-AVAILABLE alert's input) current, as a cluster's readiness probe does."""
        next_check = time.monotonic() + _READINESS_INTERVAL
        while not self.stopping.wait(0.5):
            self._check_children()
            if self.settings.monitoring and time.monotonic() >= next_check:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"http://127.0.0.1:{self.settings.port}/readyz", timeout=2.0)
                next_check = time.monotonic() + _READINESS_INTERVAL

    def stop(self) -> None:
        """The gateway first (it drains in-flight requests), then the model server."""
        if self.stop_signal:
            self.say(f"{self.stop_signal}: stopping")
            self.stop_signal = ""
        for child in reversed(self.children):
            if child.exit_code() is None:
                self.say(f"stopping the {child.name} (pid {child.pid})")
            grace = _GATEWAY_GRACE if child.name == "gateway" else _MODEL_SERVER_GRACE
            child.stop(grace)
        self.children.clear()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            # No output here: the signal can land inside a write to the same stream, and writing
            # from the handler then raises "reentrant call" into it. stop() says which signal.
            if not self.stopping.is_set():
                self.stop_signal = signal.Signals(signum).name
                self.stopping.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)
