"""The checked-in `./pants` launcher, run for real on a copy of the repo's launcher files.

Each test gives the launcher its own empty cache, so nothing here touches the developer's setup.
The successful bootstrap downloads from PyPI and Debian's archive, as on a fresh machine (≈ 20 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_FILES = ("pants", "pants.toml")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _buildroot(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in REPO_FILES:
        shutil.copy2(name, root / name)
    (root / "BUILD").write_text("")
    return root


def _run(root: Path, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": os.environ.get("PATH", BASE_PATH),
        "CLOTHING_BOOTSTRAP_CACHE": str(cache),
        **env,
    }
    return subprocess.run(
        ["bash", str(root / "pants"), "--no-pantsd", "--version"],
        cwd=root, env=full_env, capture_output=True, text=True, timeout=900, check=False,
    )


def test_missing_python3_fails_with_one_line(tmp_path: Path) -> None:
    # A PATH with the shell tools the launcher uses but no python3.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = ("bash", "sha256sum", "cut", "dirname", "mkdir", "uname", "id", "getent", "cat", "touch", "rm")
    for tool in tools:
        found = shutil.which(tool, path=BASE_PATH)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    result = _run(_buildroot(tmp_path), tmp_path / "cache", PATH=str(bin_dir))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[bootstrap]")]
    assert errors == ["bootstrap failed: python3 not found on PATH (needed to install the bootstrap tools)"]


def test_unreachable_debian_archive_names_the_step(tmp_path: Path) -> None:
    # Port 9 on loopback refuses connections: apt fails at once instead of timing out.
    result = _run(_buildroot(tmp_path), tmp_path / "cache", CLOTHING_DEBIAN_MIRROR="http://127.0.0.1:9/debian")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[bootstrap]")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("bootstrap failed: apt-get update for Debian bookworm (its output: ")


def test_bootstraps_once_then_runs_quietly(tmp_path: Path) -> None:
    root = _buildroot(tmp_path)
    cache = tmp_path / "cache"
    first = _run(root, cache)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "2.17.1"
    assert "[bootstrap] ready" in first.stderr
    rc = (root / ".pants.rc").read_text()
    assert f"file://{cache}/tools/pex-{{version}}" in rc
    assert "[protoc]" in rc
    assert "[grpc-python-plugin]" in rc

    second = _run(root, cache)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "2.17.1"
    assert "[bootstrap]" not in second.stderr
