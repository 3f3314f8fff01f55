"""The local stack as a user runs it, `python -m local_stack …`, for the tests of that program: its
output collected line by line, waited on, and Ctrl-C to stop it. (testing_support.stack starts
the stack's parts one by one instead.)"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

from testing_support.processes import child_environment


class StackProcess:
    """`python -m local_stack …` with its output collected line by line."""

    def __init__(self, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_stack", *args],  # noqa: S603 - argv built here, no shell
            env=child_environment(extra_env or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; output:\n{''.join(self.output)[-4000:]}")

    def text(self) -> str:
        """Everything the stack has written so far."""
        return "".join(self.output)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it (SIGKILL after 60 s); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
