"""Child processes of the stack: this interpreter, this code, their own session, never orphaned."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the stack itself is killed (even with SIGKILL),
    # the kernel sends the child SIGTERM, so no model server or gateway is left behind.
    # Not Linux (no prctl): Ctrl-C and SIGTERM still stop the children through the stack.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The current environment plus `extra`, with PYTHONPATH set to this process' sys.path.

    Under `pants run` (or from a PEX) the code and its requirements are found through sys.path, not
    through an installed package, so children get the same path.
    """
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    # TensorFlow's start-up notes (oneDNN, CPU features) only fill the terminal; errors still show.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Child:
    """`python -m <module> <args>` as a child in its own session (Ctrl-C reaches only the stack)."""

    def __init__(self, name: str, module: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],  # noqa: S603 - our own interpreter and modules
            env=dict(env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # preexec_fn is unsafe with threads; the stack starts its children from its only thread.
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
