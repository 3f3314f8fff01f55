"""Starting the server as a real process (`python -m model_server …`), for tests in any package.

    with ServerProcess.start(["--model_name", "m", "--model_base_path", path]) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")

The child gets `--port 0 --bind_address 127.0.0.1` unless the flags say otherwise, runs with the
calling interpreter and `sys.path`, and is stopped with SIGTERM (then killed) on exit. `start`
returns once the `model_server ready:` line appears, and raises with the log if the process
exits or is not ready within the timeout. On Linux the child also gets SIGTERM if the calling
process dies without stopping it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from testing_support.processes import child_environment, die_with_parent

READY = re.compile(r"model_server ready: grpc=\S+:(\d+) rest=(\S+)")


class ServerProcess:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.grpc_port = 0
        self.rest_port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls, flags: Sequence[str], timeout: float = 180, command: Sequence[str] | None = None
    ) -> ServerProcess:
        argv = list(flags)
        if not any(f.startswith("--port") for f in argv):
            argv = ["--port", "0", *argv]
        if not any(f.startswith("--bind_address") for f in argv):
            argv = ["--bind_address", "127.0.0.1", *argv]
        env = child_environment()
        base = list(command) if command is not None else [sys.executable, "-m", "model_server"]
        # The caller's own flags, for its own test server: nothing untrusted reaches this.
        process = subprocess.Popen(
            [*base, *argv],  # noqa: S603
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=die_with_parent,
        )
        server = cls(process)
        if not server.wait_ready(timeout):
            server.stop()
            raise RuntimeError("model server did not become ready:\n" + server.log())
        return server

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = READY.search(line)
            if match:
                self.grpc_port = int(match.group(1))
                rest = match.group(2)
                self.rest_port = 0 if rest == "off" else int(rest.rsplit(":", 1)[1])
                self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._reader.join(timeout=5)
                return self._ready.is_set()
        return True

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the drain, kill if it does not end; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
