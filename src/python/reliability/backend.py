"""The model server behind a fault proxy: what the gateway talks to in the fault tests."""

from __future__ import annotations

from pathlib import Path

from reliability.fault_proxy import FaultProxy
from testing_support.stack import ExportedModel, ModelServer, start_model_server


class Backend:
    """The model server behind a `FaultProxy`: what the gateway talks to in the fault tests.

    The proxy's address stays the same when the server behind it is killed and started again,
    and its delay makes the server slow on demand.
    """

    def __init__(self, model: ExportedModel, logs: Path) -> None:
        self.model = model
        self.logs = logs
        self.server: ModelServer | None = start_model_server(model, logs)
        self.proxy = FaultProxy(self.server.grpc_port).start()

    @property
    def address(self) -> str:
        return self.proxy.address

    def kill(self) -> None:
        """SIGKILL the model server (a crash or an OOM kill: no goodbye to its clients)."""
        assert self.server is not None
        self.server.process.kill()

    def restart(self) -> ModelServer:
        """Start the model server again on its old ports; returns once the model is AVAILABLE."""
        assert self.server is not None
        self.server = self.server.restart(self.logs)
        return self.server

    def ensure_running(self) -> None:
        """Undo what a test did: no delay, a live server."""
        self.proxy.delay = 0.0
        if self.server is None or not self.server.process.alive():
            self.restart()

    def close(self) -> None:
        self.proxy.stop()
        if self.server is not None:
            self.server.process.stop()
