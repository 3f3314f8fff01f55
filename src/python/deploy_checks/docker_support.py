"""A Docker daemon and a Python base image for the tests that build and run containers.

CI machines have no running Docker engine and cannot reach Docker Hub. `docker_daemon()` uses a
running daemon if there is one, else installs Debian's docker.io and starts dockerd with a private
data root and socket (no iptables, no bridge: containers use the host network). `base_image()`
makes a Python 3.11 image from Debian's archive with mmdebstrap, once: the tarball and the
daemon's data root live in a cache folder outside the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy_checks.testlib import apt_install, build_root, run

BASE_IMAGE = "clothing-py311-base:bookworm"
_SOCKET_DIR = Path("/run/clothing-docker")
_HOST = f"unix://{_SOCKET_DIR}/docker.sock"
# The pid of the dockerd the tests started, so whichever test process leaves last can stop it.
_STARTED = _SOCKET_DIR / "started-by-tests.pid"


def user_home() -> Path:
    # Pants runs tests without HOME; the caches belong to the user, wherever the checkout is.
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def cache_dir() -> Path:
    path = Path(os.environ.get("XDG_CACHE_HOME", user_home() / ".cache")) / "clothing-classifier" / "docker"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Docker:
    env: dict[str, str]

    def __call__(
        self, *args: str | Path, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], env=self.env, timeout=timeout, check=check)


def _env(host: str | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cache_dir())}
    if host:
        env["DOCKER_HOST"] = host
    return env


def _responds(env: dict[str, str]) -> bool:
    return run(["docker", "info"], env=env, timeout=30, check=False).returncode == 0


@contextmanager
def docker_daemon() -> Iterator[Docker]:
    """A usable daemon for the duration of the block.

    Test files run in parallel processes and share the daemon the tests start (one socket, one
    data root). Finding or starting it happens under an exclusive lock, using it under a shared
    one; the last user to leave stops a daemon the tests started, never a daemon found running.
    """
    _SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    with (_SOCKET_DIR / "users.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            env = _find_or_start_daemon()
        finally:
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield Docker(env)
        finally:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another test process still uses it; the last one out stops it
            else:
                _stop_started_daemon()


def _find_or_start_daemon() -> dict[str, str]:
    for host in (os.environ.get("DOCKER_HOST"), None, _HOST):
        if shutil.which("docker") and _responds(_env(host)):
            return _env(host)
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    with (cache_dir() / "dockerd.log").open("ab") as log:
        # dockerd from Debian's docker.io, found on PATH like the docker client.
        daemon = subprocess.Popen(
            [  # noqa: S603, S607
                "dockerd",
                "--data-root", str(cache_dir() / "data"),
                "--exec-root", str(_SOCKET_DIR / "exec"),
                "--pidfile", str(_SOCKET_DIR / "dockerd.pid"),
                "-H", _HOST,
                # No NAT or bridge to set up (and none allowed here): containers share the host's
                # network, which also lets them reach servers the tests start on loopback.
                "--iptables=false", "--ip-masq=false", "--bridge=none",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _STARTED.write_text(str(daemon.pid))
    deadline = time.monotonic() + 60
    while not _responds(_env(_HOST)):
        if daemon.poll() is not None or time.monotonic() > deadline:
            _stop_started_daemon()
            raise RuntimeError(f"dockerd did not start; see {cache_dir() / 'dockerd.log'}")
        time.sleep(0.5)
    return _env(_HOST)


def _stop_started_daemon() -> None:
    """Stop the dockerd whose pid the tests recorded when they started it, if it still runs."""
    try:
        pid = int(_STARTED.read_text())
    except (OSError, ValueError):
        return
    _STARTED.unlink(missing_ok=True)
    if not _is_dockerd(pid):
        return  # gone already (the pid may even belong to another process now)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _is_dockerd(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it


def _is_dockerd(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except (OSError, IndexError):
        return False


def debian_mirror() -> str:
    """The Debian archive URL the machine's own apt sources use."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, flags=re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, flags=re.MULTILINE)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        match = re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", legacy.read_text(), flags=re.MULTILINE
        )
        if match:
            return match.group(1)
    raise RuntimeError("no Debian bookworm source in /etc/apt/sources.list.d/*.sources or sources.list")


def base_image(docker: Docker) -> str:
    """A Python 3.11 base (Debian bookworm's python3) in the daemon, made once and cached."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = cache_dir() / "py311-base.tar"
    if not tarball.exists():
        if shutil.which("mmdebstrap") is None:
            apt_install("mmdebstrap")
        partial = tarball.with_suffix(".partial")
        run(
            ["mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", "--include=python3",
             "bookworm", partial, debian_mirror()],
            timeout=900,
        )  # fmt: skip
        partial.rename(tarball)
    docker(
        "import",
        "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "ENV LANG=C.UTF-8",
        "--change", 'CMD ["python3"]',
        tarball, BASE_IMAGE,
    )  # fmt: skip
    return BASE_IMAGE


def pants_package(
    docker: Docker, targets: list[str], tag: str, workdir: Path, **build_env: str
) -> dict[str, str]:
    """`./pants package TARGETS` into `docker`'s daemon; returns each image's ID by repository.

    A second Pants while the outer one runs the test: `--no-pantsd` (the outer run holds the
    build root's pantsd, and a nested client would wait for it forever) and a workdir of its own.
    It shares the user's Pants caches, so a warm run only builds what changed. Its environment is
    built from scratch (the test process carries the outer pytest PEX's variables): IMAGE_TAG,
    the daemon, and `build_env` (build arguments such as BASE_IMAGE, or CLOTHING_MODEL).
    """
    root = build_root()
    # The distdir must be inside the build root; .pants.d is ignored by Pants and git.
    dist = Path(".pants.d") / "image-tests" / tag
    env = {
        **_nested_env(),
        "IMAGE_TAG": tag,
        "DOCKER_CONFIG": str(cache_dir() / ".docker"),
        **({"DOCKER_HOST": docker.env["DOCKER_HOST"]} if "DOCKER_HOST" in docker.env else {}),
        **build_env,
    }
    images: dict[str, str] = {}
    try:
        result = run(
            [root / "pants", *_NESTED, f"--pants-workdir={workdir}", f"--pants-distdir={dist}",
             "package", *targets],
            env=env, cwd=root, timeout=1800,
        )  # fmt: skip
        print(result.stderr[-3000:], result.stdout)
        for info_file in (root / dist).glob("*/*.docker-info.json"):
            info = json.loads(info_file.read_text())
            names = {t["name"] for registry in info["registries"] for t in registry["tags"]}
            (repository,) = {name.split(":")[0] for name in names}
            assert names == {f"{repository}:{tag}", f"{repository}:latest"}, names
            images[repository] = info["image_id"]
    finally:
        shutil.rmtree(root / dist, ignore_errors=True)
    return images


# A second Pants while the outer one runs the test (pants_package says why each option).
_NESTED = ["--no-pantsd", "--no-dynamic-ui", "--no-watch-filesystem"]


def _nested_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(user_home()),
        "LANG": "C.UTF-8",
        # The caches the outer Pants and cache_dir() use, when they are not under HOME.
        **({"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]} if "XDG_CACHE_HOME" in os.environ else {}),
    }


def pants_run(target: str, args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`./pants run TARGET -- ARGS` in the build root (a program of the repository, e.g. the export
    tool writing a model for a test), as pants_package runs Pants."""
    return run(
        [build_root() / "pants", *_NESTED, f"--pants-workdir={workdir}", "run", target, "--", *args],
        env=_nested_env(), cwd=build_root(), timeout=1800,
    )  # fmt: skip
