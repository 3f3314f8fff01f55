"""The whole server assembled from its settings: model manager, core, gRPC and REST fronts, poller.

`ModelServer` binds its ports when built (so a port in use fails at once, and port 0 resolves to a
real port), serves after `start()`, and drains on `stop()`: refuse new Predict calls, let those in
flight finish, stop the fronts, unload the models. Tests run it in-process; `main` runs it as the
`model_server` command.
"""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn

from clothing_settings import SettingError
from model_server.config_files import load_model_config_file
from model_server.core import ServingCore
from model_server.errors import ServingError
from model_server.grpc_front import GrpcFront
from model_server.model_manager import ModelManager
from model_server.monitoring import RequestMetrics
from model_server.rest_front import create_app
from model_server.servable import LoadOptions, Servable, load_servable
from model_server.settings import ServerSettings

log = logging.getLogger(__name__)


def _listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {address}:{port} (REST): {e.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class ModelServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        options = LoadOptions(
            batching=settings.batching,
            enable_model_warmup=settings.enable_model_warmup,
            intra_op_parallelism=settings.intra_op_parallelism,
            inter_op_parallelism=settings.inter_op_parallelism,
        )

        def load(name: str, version: int, path: Path) -> Servable:
            return load_servable(name, version, path, options)

        self._ready = threading.Event()
        self._grpc: GrpcFront | None = None
        self.manager = ModelManager(
            settings.models, load, on_change=self._models_changed,
            allow_labels_for_unavailable=settings.allow_version_labels_for_unavailable_models,
        )
        metrics = RequestMetrics() if settings.prometheus_path is not None else None
        self.core = ServingCore(self.manager, settings.max_concurrent_requests, metrics)
        self._grpc = GrpcFront(
            self.core,
            settings.bind_address,
            settings.grpc_port,
            max_request_bytes=settings.max_request_bytes,
            max_concurrent_requests=settings.max_concurrent_requests,
            tensor_content=settings.tensor_content_responses,
            socket_path=settings.grpc_socket_path,
            channel_arguments=settings.grpc_channel_arguments,
            health_service=settings.health_service,
        )
        self.grpc_port = self._grpc.port
        self._rest_socket: socket.socket | None = None
        self._rest: uvicorn.Server | None = None
        self.rest_port = 0
        try:
            if settings.rest_api_port:
                self._rest_socket = _listen(settings.bind_address, settings.rest_api_port)
                self.rest_port = int(self._rest_socket.getsockname()[1])
        except OSError:
            self._grpc.stop(0)
            raise
        # REST parsing and model runs: as many threads as Predict calls may be admitted, plus a few
        # so status and metadata calls still answer while Predict is saturated.
        self._rest_executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_requests + 8, thread_name_prefix="rest"
        )
        self._stop_polling = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def describe(self) -> str:
        rest = f"{self.settings.bind_address}:{self.rest_port}" if self.rest_port else "off"
        text = f"grpc={self.settings.bind_address}:{self.grpc_port} rest={rest}"
        if self.settings.grpc_socket_path:
            text += f" grpc_socket={self.settings.grpc_socket_path}"
        return text

    def start(self) -> None:
        assert self._grpc is not None
        self._grpc.start()
        if self._rest_socket is not None:
            app = create_app(
                self.core,
                self._rest_executor,
                max_request_bytes=self.settings.max_request_bytes,
                timeout_ms=self.settings.rest_api_timeout_ms,
                prometheus_path=self.settings.prometheus_path,
            )
            config = uvicorn.Config(
                app,
                log_config=None,  # keep the process's logging setup
                access_log=False,
                lifespan="off",
                # Connections beyond this get 503 from uvicorn instead of queueing without bound.
                limit_concurrency=self.settings.max_concurrent_requests + 32,
                timeout_graceful_shutdown=max(1, int(self.settings.drain_seconds)),
            )
            self._rest = uvicorn.Server(config)
            self._spawn("rest", self._rest.run, [self._rest_socket])
        log.info("model_server listening: %s (loading %s)", self.describe(),
                 ", ".join(m.name for m in self.settings.models))
        if self.settings.prometheus_path is not None and self._rest_socket is None:
            log.warning("--monitoring_config_file: no REST port (--rest_api_port is 0), so no metrics path")
        self._spawn("poller", self.manager.run_polling, self.settings.file_system_poll_wait_seconds,
                    self._stop_polling)
        if self.settings.model_config_file is not None and self.settings.model_config_poll_seconds > 0:
            self._spawn("config-poller", self._poll_model_config, self.settings.model_config_file,
                        self.settings.model_config_poll_seconds)

    def _spawn(self, name: str, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _poll_model_config(self, path: Path, interval: float) -> None:
        """--model_config_file_poll_wait_seconds: re-read the model config, apply what changed.
        A file that does not parse is reported once and the models served stay as they are."""
        last_error = ""
        while not self._stop_polling.wait(interval):
            try:
                models = load_model_config_file(path)
            except SettingError as e:
                if str(e) != last_error:
                    log.error("model config not reloaded, serving the previous one: %s", e)
                last_error = str(e)
                continue
            if models == self.manager.configs():
                last_error = ""
                continue
            try:
                self.manager.reconfigure(models)
            except ServingError as e:
                # TF Serving's refusal (a label on a version not AVAILABLE): tried again at every
                # poll, as TF Serving does, and reported once.
                if e.message != last_error:
                    log.error("model config %s not applied, serving the previous one: %s", path, e.message)
                last_error = e.message
                continue
            except Exception:  # a poller that dies silently would freeze the configuration
                log.exception("applying the model config failed")
                continue
            last_error = ""
            log.info("model config %s applied: now serving %s", path, ", ".join(m.name for m in models))

    def _models_changed(self) -> None:
        if self._grpc is not None:
            self._grpc.update_health()
        if self.core.ready() and not self._ready.is_set():
            self._ready.set()
            served = " ".join(f"{name}:{version}" for name, version in self.manager.served())
            log.info("model_server ready: %s models=%s", self.describe(), served)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every model has an AVAILABLE version."""
        return self._ready.wait(timeout)

    def begin_drain(self) -> None:
        """Refuse new Predict calls (UNAVAILABLE), report NOT_SERVING, run queued batches now."""
        self.core.start_drain()
        if self._grpc is not None:
            self._grpc.update_health()
        self.manager.flush_batches()

    def stop(self, drain_seconds: float | None = None) -> None:
        """Drain and stop: new Predict calls get UNAVAILABLE, those in flight may finish."""
        if self._stopped:
            return
        self._stopped = True
        drain = self.settings.drain_seconds if drain_seconds is None else drain_seconds
        self.begin_drain()
        if not self.core.wait_idle(drain):
            log.warning("drain: requests still running after %.1f s; stopping anyway", drain)
        if self._grpc is not None:
            self._grpc.stop(grace=1.0)
        if self._rest is not None:
            self._rest.should_exit = True
        self._stop_polling.set()
        for thread in self._threads:
            thread.join(timeout=max(drain, 5.0))
        if self._rest_socket is not None:
            self._rest_socket.close()
        self._rest_executor.shutdown(wait=False, cancel_futures=True)
        self.manager.close()
        log.info("model_server stopped")
