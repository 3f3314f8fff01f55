"""`python -m gateway`: read the settings from the environment once, serve with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import httptools  # noqa: F401 - uvicorn's C HTTP parser (selected below); imported so the PEX carries it

from gateway.app import create_app
from gateway.connection_limits import LimitedServer, limited_config
from gateway.settings import ENVIRONMENT, Settings, SettingsError
from malloc_tuning import keep_freed_memory


def _parser() -> argparse.ArgumentParser:
    rows = "\n".join(
        f"  {name:<30} {meaning} (default: {default or 'empty'})" for name, default, meaning in ENVIRONMENT
    )
    return argparse.ArgumentParser(
        prog="gateway",
        description="The clothing classifier's HTTP gateway: image URL or upload -> TF Serving -> scores. "
        "It is configured by environment variables, read once at startup.",
        epilog=f"environment:\n{rows}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    _parser().parse_args(argv)
    try:
        settings = Settings.from_environ(os.environ)
    except SettingsError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2
    # Every image allocates and frees a few MB; without this, glibc faults those pages in anew.
    keep_freed_memory(settings.keep_freed_mb * 1024 * 1024)
    # The connection limits (header bytes and count, head/body/idle timeouts, the connection cap)
    # live in a subclass of uvicorn's httptools protocol: gateway/connection_limits.py.
    config, guard = limited_config(
        create_app(settings),
        settings.connection_limits,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        # The stock asyncio loop, which grpc.aio supports. The HTTP protocol is uvicorn's
        # httptools one (C parser; h11, the pure-Python default, costs more CPU per request).
        loop="asyncio",
        # SIGTERM stops accepting connections, then in-flight requests get this long to finish.
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        # Behind a load balancer the client address comes in X-Forwarded-For; nothing here uses
        # it, so do not trust it.
        proxy_headers=False,
        server_header=False,
    )
    server = LimitedServer(config, guard)
    server.run()
    # After a drain started by SIGTERM/SIGINT, uvicorn re-raises the signal, so the process ends by
    # it (exit 143/130, what supervisors expect) once in-flight requests have finished. It returns
    # here when started without a signal, or when startup failed (port taken, lifespan error:
    # `started` stays false).
    return 0 if server.started else 1
