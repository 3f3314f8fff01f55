"""Child processes for tests and benchmarks: start, wait until they answer, measure, stop by pid.

`RunningProcess` is the one way tests start a child: in its own session (so a signal meant for it
never reaches the test runner), killed by the kernel if the runner dies (`die_with_parent`), its
output in a log file whose tail is quoted when something goes wrong; `stop()` only ever signals the
pid it started. `child_environment` is the environment such a child needs to import this code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

# The TensorFlow resolve has psutil without its stubs (types-psutil is in python-default only).
import psutil  # type: ignore[import-untyped, unused-ignore]


class ProcessFailed(RuntimeError):
    """A process exited or did not become ready; the message carries the tail of its log."""


def proc_stat(pid: int) -> list[str]:
    """The fields of Linux's /proc/<pid>/stat after the command name, so field N (1-based, as
    proc(5) numbers them) is `[N - 3]`. The name, field 2, is in parentheses and may contain spaces
    and parentheses itself: the split is made after its last ")"."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def python_module(module: str, *args: str, descriptor_limit: int | None = None) -> list[str]:
    """argv running `python -m module args…` with this interpreter; with `descriptor_limit`, the
    process may open at most that many files and sockets (RLIMIT_NOFILE, soft and hard)."""
    if descriptor_limit is None:
        return [sys.executable, "-m", module, *args]
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({descriptor_limit}, {descriptor_limit})); "
        f"sys.argv = [{module!r}, *sys.argv[1:]]; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, *args]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Python child that must import what this process imports.

    Tests run from a Pants-built PEX: its sys.path is the project's sources plus the resolve's
    third-party packages, which a plain `python -m …` child only sees through PYTHONPATH.
    """
    env = {name: value for name, value in os.environ.items() if not _is_pex_variable(name)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _is_pex_variable(name: str) -> bool:
    # A PEX sets these for itself (PEX, PEX_INTERPRETER, PEX_MODULE, PEX_EXTRA_SYS_PATH, …); a child
    # that inherited them would run as that PEX, or with its path.
    return name == "PEX" or name.startswith("PEX_")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the process that started it dies.

    A test runner killed mid-test (a timeout, Pants restarting a run, Ctrl-C) never reaches its
    fixtures' teardown; without this its model servers and gateways live on, orphaned, holding
    memory and ports. SIGKILL, not SIGTERM: nothing an orphaned test server holds is worth a drain,
    and a child stuck or ignoring SIGTERM must not survive. Linux only (prctl); elsewhere a no-op.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RunningProcess:
    """One started process: its pid, its log, and how to stop it."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.started_at = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in _closed()
        # argv is built by this package (no shell); S603 cannot know that.
        self._popen = subprocess.Popen(
            self.argv,  # noqa: S603
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def rss(self) -> int:
        """Resident memory of the process and its children, bytes (0 once it has exited)."""
        try:
            proc = psutil.Process(self.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return int(total)
        except psutil.Error:
            return 0

    def minor_page_faults(self) -> int:
        """Pages this process has faulted in so far (minflt, /proc/<pid>/stat field 10)."""
        return int(proc_stat(self.pid)[10 - 3])

    def log_text(self) -> str:
        """Everything the process has written so far (stdout and stderr, in order)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to this process (only the pid started here)."""
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None if it is still running after `timeout` seconds."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._closed()

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit status."""
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.kill()
        return self._closed()

    def kill(self) -> int:
        """SIGKILL: the process gets no chance to clean up (a crash, an OOM kill, a lost node)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self._popen.wait()
        return self._closed()

    def _closed(self) -> int:
        code = self._popen.wait()
        if not self._log.closed:
            self._log.close()
        return code

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll `ready` until it holds; seconds since start. Fails fast if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ProcessFailed(
                    f"{self.name} exited with status {self.returncode} before {what}:\n{self.log_tail()}"
                )
            if ready():
                return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name} not {what} within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} rc={self.returncode}>"
