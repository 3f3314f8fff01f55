"""The model server as a real process (`python -m model_server …`) on ports it picks, for tests.

    with ServerProcess.start(["--model_name", "m", "--model_base_path", path]) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")

The child gets `--port 0 --bind_address 127.0.0.1` unless the flags say otherwise, runs with the
calling interpreter and `sys.path` (a `RunningProcess`: its own session, killed if the test
runner dies), and is stopped with SIGTERM (then killed) on exit. `start` returns once the
`model_server ready:` line appears, which names the ports it bound, and raises with the log if the
process exits or is not ready within the timeout. `write_config` writes a --model_config_file.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from testing_support.processes import RunningProcess, child_environment

READY = re.compile(r"model_server ready: grpc=\S+:(\d+) rest=(\S+)")


class ServerProcess:
    """A started model server: its process, its log lines and the ports it announced."""

    def __init__(self, process: RunningProcess, log_dir: tempfile.TemporaryDirectory[str] | None) -> None:
        self.process = process
        self.grpc_port = 0
        self.rest_port = 0
        self._log_dir = log_dir
        self._final_lines: list[str] | None = None

    @classmethod
    def start(
        cls,
        flags: Sequence[str],
        timeout: float = 180,
        command: Sequence[str] | None = None,
        log_path: Path | None = None,
    ) -> ServerProcess:
        argv = list(flags)
        if not any(f.startswith("--port") for f in argv):
            argv = ["--port", "0", *argv]
        if not any(f.startswith("--bind_address") for f in argv):
            argv = ["--bind_address", "127.0.0.1", *argv]
        base = list(command) if command is not None else [sys.executable, "-m", "model_server"]
        # Without a log path of the caller's, the log lives as long as this object needs it.
        log_dir = None if log_path is not None else tempfile.TemporaryDirectory(prefix="model-server-")
        path = log_path or Path(log_dir.name if log_dir else ".") / "model_server.log"
        server = cls(RunningProcess("model server", [*base, *argv], child_environment(), path), log_dir)
        if not server.wait_ready(timeout):
            server.stop()
            raise RuntimeError("model server did not become ready:\n" + server.log())
        return server

    @property
    def lines(self) -> list[str]:
        """The lines the server has written so far (stdout and stderr, in order)."""
        if self._final_lines is not None:
            return self._final_lines
        return self.process.log_text().splitlines()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            match = next((m for m in map(READY.search, self.lines) if m), None)
            if match:
                self.grpc_port = int(match.group(1))
                rest = match.group(2)
                self.rest_port = 0 if rest == "off" else int(rest.rsplit(":", 1)[1])
                return True
            if not self.process.alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the drain, kill if it does not end; returns the exit status."""
        code = self.process.stop(grace=timeout)
        if self._final_lines is None:
            self._final_lines = self.lines
            if self._log_dir is not None:
                self._log_dir.cleanup()
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def write_config(
    path: Path, models: dict[str, Path], labels: dict[str, dict[str, int]] | None = None
) -> Path:
    """A --model_config_file serving `models` (name -> base path), with version labels if given."""
    entries = []
    for name, base in models.items():
        label_text = "".join(
            f" version_labels {{ key: '{k}' value: {v} }}" for k, v in (labels or {}).get(name, {}).items()
        )
        policy = " model_version_policy { all {} }" if label_text else ""
        entries.append(f"config {{ name: '{name}' base_path: '{base}'{policy}{label_text} }}")
    path.write_text("model_config_list { " + " ".join(entries) + " }\n", encoding="utf-8")
    return path
