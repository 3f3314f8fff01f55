"""`python -m gateway`: read the settings from the environment once, serve with uvicorn."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Sequence

import httptools  # noqa: F401 - uvicorn's C HTTP parser (selected below); imported so the PEX carries it
import uvicorn
from starlette.applications import Starlette

from clothing_settings import SettingError
from gateway.app import create_app, metrics_app
from gateway.connection_limits import ConnectionGuard, LimitedServer, limited_config
from gateway.kserve_v2_grpc import GrpcFront
from gateway.metrics import Metrics
from gateway.request_ids import log_config
from gateway.settings import Listener, parse_settings
from memory_reuse import keep_freed_memory


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2
    listener = settings.listener
    if settings.grpc.port:
        # The gRPC server binds in the app's lifespan, where a failure is a traceback: a port that
        # cannot be had is told here, in one line, before anything else starts.
        try:
            _check_free(listener.host, settings.grpc.port)
        except OSError as e:
            print(f"gateway: GATEWAY_GRPC_PORT={settings.grpc.port}: {e.strerror or e}", file=sys.stderr)
            return 1
    # Every image allocates and frees a few MB; without this, glibc faults those pages in anew.
    keep_freed_memory(listener.keep_freed_mb * 1024 * 1024)
    metrics = Metrics()
    try:
        app = create_app(settings, metrics=metrics)
    except SettingError as e:  # the prediction log's file cannot be opened
        print(f"gateway: {e}", file=sys.stderr)
        return 2
    if listener.metrics_port:
        try:
            _serve_metrics(metrics, listener)
        except OSError as e:
            reason = e.strerror or str(e)
            print(f"gateway: GATEWAY_METRICS_PORT={listener.metrics_port}: {reason}", file=sys.stderr)
            return 1
    # The connection limits (header bytes and count, head/body/idle timeouts, the connection cap)
    # live in a subclass of uvicorn's httptools protocol: gateway/connection_limits.py.
    config, guard = limited_config(
        app,
        settings.connections,
        host=listener.host,
        port=listener.port,
        # uvicorn's log with the request id in every line, the gateway's own lines included.
        log_config=log_config(listener.log_level),
        log_level=listener.log_level,
        lifespan="on",
        # The stock asyncio loop, which grpc.aio supports. The HTTP protocol is uvicorn's
        # httptools one (C parser; h11, the pure-Python default, costs more CPU per request).
        loop="asyncio",
        # SIGTERM stops accepting connections, then in-flight requests get this long to finish.
        timeout_graceful_shutdown=int(listener.shutdown_grace),
        # Behind a load balancer the client address comes in X-Forwarded-For; nothing here uses
        # it, so do not trust it.
        proxy_headers=False,
        server_header=False,
    )
    server = _Server(config, guard, app)
    server.run()
    # After a drain started by SIGTERM/SIGINT, uvicorn re-raises the signal, so the process ends by
    # it (exit 143/130, what supervisors expect) once in-flight requests have finished. It returns
    # here when started without a signal, or when startup failed (port taken, lifespan error:
    # `started` stays false).
    return 0 if server.started else 1


class _Server(LimitedServer):
    """Begins the gRPC server's drain (when GATEWAY_GRPC_PORT is on) as the HTTP server's begins, so
    both run within the one GATEWAY_SHUTDOWN_GRACE; the app's lifespan then waits for it."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard, app: Starlette) -> None:
        super().__init__(config, guard)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        front: GrpcFront | None = getattr(self.app.state, "grpc_front", None)
        if front is not None:
            front.begin_stop()
        await super().shutdown(sockets)


def _check_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socket.create_server((host, port), family=family).close()


def _serve_metrics(metrics: Metrics, listener: Listener) -> None:
    """/metrics on its own port, from a thread with its own event loop: it takes no part in the
    main server's signals and drain, and ends with the process. The socket is bound here, so a
    port that cannot be had stops the start (OSError) instead of a gateway without metrics."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.create_server((listener.host, listener.metrics_port), family=family)
    config = uvicorn.Config(
        metrics_app(metrics),
        log_config=log_config(listener.log_level),
        log_level=listener.log_level,
        lifespan="off",
        loop="asyncio",
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="metrics", daemon=True).start()
