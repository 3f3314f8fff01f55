"""The checked-in `./pants` launcher, run for real on copies of the repository's launcher files.

Each test gives the launcher its own empty cache, so nothing here touches the developer's setup.
The failure cases each expect exactly one line of their own on stderr (besides `[bootstrap]`
progress lines), naming the problem. The full bootstraps download from PyPI as a new machine does.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

SYSTEM_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# What a machine without Debian's package tools lacks.
NO_APT = re.compile(r"^(apt|apt-get|apt-cache|apt-config|apt-key|dpkg.*)$")
# Interpreters the tests keep off PATH when they want the launcher to find none.
PYTHONS = re.compile(r"^python[0-9.]*(-config)?$|^pydoc.*|^pyenv.*")
REPO_FILES = (
    "pants",
    "pants.toml",
    "BUILD",
    "pyproject.toml",
    "README.md",
    "build-support/grpc_python_plugin.py",
)
# Every resolve's requirements and lockfile: pants.toml names them all, so a nested Pants needs
# each one that exists (a new resolve must not break these tests).
REQUIREMENTS_DIR = "3rdparty/python"


def _source_root() -> Path:
    # pants.toml's [test] extra_env_vars passes the repository; the sandbox holds only this
    # target's dependencies, and a nested Pants needs the real files (the protos, the lockfiles).
    return Path(os.environ.get("CLOTHING_BUILD_ROOT", "."))


def _user_home() -> Path:
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _buildroot(tmp_path: Path, *, protos: bool = False) -> Path:
    source, root = _source_root(), tmp_path / "repo"
    for name in REPO_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, root / name)
    shutil.copytree(source / REQUIREMENTS_DIR, root / REQUIREMENTS_DIR)
    if protos:
        tests = shutil.ignore_patterns("*_test.py")
        shutil.copytree(source / "src/protos", root / "src/protos", ignore=tests)
    return root


def _bin_dir(tmp_path: Path, drop: re.Pattern[str], extra: dict[str, str] | None = None) -> Path:
    """A PATH directory holding the machine's commands minus those matching `drop`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in SYSTEM_BIN_DIRS:
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = bin_dir / name
            if drop.match(name) or target.exists() or target.is_symlink():
                continue
            target.symlink_to(os.path.join(directory, name))
    for name, path in (extra or {}).items():
        (bin_dir / name).symlink_to(path)
    return bin_dir


def _python(version: str) -> str:
    """A CPython of this version on this machine (its image ships pyenv builds)."""
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", ""], capture_output=True, check=False).returncode == 0:
        return found
    candidates = sorted((_user_home() / ".pyenv" / "versions").glob(f"{version}*/bin/python{version}"))
    if not candidates:
        pytest.fail(f"this test needs a CPython {version} on the machine (PATH or ~/.pyenv)")
    return str(candidates[-1])


def _run(
    root: Path, cache: Path, *args: str, wrap: tuple[str, ...] = (), timeout: float = 900, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "HOME": str(_user_home()),
        "PATH": os.environ.get("PATH", ":".join(SYSTEM_BIN_DIRS)),
        "CLOTHING_BOOTSTRAP_CACHE": str(cache),
        **env,
    }
    return subprocess.run(
        [*wrap, "bash", str(root / "pants"), "--no-pantsd", *(args or ("--version",))],
        cwd=root, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def _own_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("[bootstrap]")]


def _needs_root() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test needs root and util-linux's unshare (CI runs as root)")


def test_unsupported_platform_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake-uname"
    fake.write_text('#!/bin/sh\ncase "$1" in -m) echo riscv64 ;; *) echo FreeBSD ;; esac\n')
    fake.chmod(0o755)
    bin_dir = _bin_dir(tmp_path, re.compile("^uname$"), {"uname": str(fake)})
    result = _run(_buildroot(tmp_path), tmp_path / "cache", PATH=str(bin_dir))
    assert result.returncode != 0
    assert _own_lines(result) == [
        "bootstrap failed: FreeBSD riscv64 is not supported: Pants 2.17 runs on Linux and macOS, x86_64 or "
        "arm64; elsewhere build in the builder container (docs/bootstrap.md)"
    ]


def test_no_python_for_the_tools_is_one_line(tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, PYTHONS)
    result = _run(_buildroot(tmp_path), tmp_path / "cache", PATH=str(bin_dir), HOME=str(tmp_path / "home"))
    assert result.returncode != 0
    assert _own_lines(result) == [
        "bootstrap failed: no Python 3.10+ found (python3 on PATH, pyenv, uv, Homebrew, asdf): the project "
        "runs on Python 3.11, install it or set CLOTHING_TOOLS_PYTHON"
    ]


def test_no_python_for_pants_and_no_apt_is_one_line(tmp_path: Path) -> None:
    # Python 3.11 for the tools, nothing in 3.7-3.9, no Debian package tools to unpack one with.
    no_python_no_apt = re.compile(f"{PYTHONS.pattern}|{NO_APT.pattern}")
    bin_dir = _bin_dir(tmp_path, no_python_no_apt, {"python3": _python("3.11")})
    result = _run(_buildroot(tmp_path), tmp_path / "cache", PATH=str(bin_dir), HOME=str(tmp_path / "home"))
    assert result.returncode != 0
    assert _own_lines(result) == [
        "bootstrap failed: no CPython 3.7-3.9 for Pants found "
        "(looked on PATH, in pyenv, uv, Homebrew, asdf); "
        "install one (e.g. 'uv python install 3.9', 'pyenv install 3.9' or 'brew install python@3.9') "
        "or set CLOTHING_PANTS_PYTHON"
    ]


def test_unreachable_debian_archive_for_the_last_resort_python_names_the_step(tmp_path: Path) -> None:
    # No Python 3.7-3.9 anywhere, so the launcher turns to Debian's archive, which refuses at once.
    bin_dir = _bin_dir(tmp_path, PYTHONS, {"python3": _python("3.11")})
    result = _run(
        _buildroot(tmp_path), tmp_path / "cache", PATH=str(bin_dir), HOME=str(tmp_path / "home"),
        CLOTHING_DEBIAN_MIRROR="http://127.0.0.1:9/debian",
    )
    assert result.returncode != 0
    lines = _own_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bootstrap failed: apt-get update for Debian bullseye (its output: ")


def test_no_network_is_one_line_naming_pypi(tmp_path: Path) -> None:
    _needs_root()
    # A network namespace of its own: not even loopback is up.
    bin_dir = _bin_dir(tmp_path, PYTHONS, {"python3": _python("3.11")})
    result = _run(
        _buildroot(tmp_path), tmp_path / "cache", wrap=("unshare", "--net"), timeout=300, PATH=str(bin_dir)
    )
    assert result.returncode != 0
    lines = _own_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bootstrap failed: pip install virtualenv==")
    assert "PyPI could not be reached (network, proxy or CA certificates;" in lines[0]


def test_full_cache_disk_is_one_line(tmp_path: Path) -> None:
    _needs_root()
    root, disk = _buildroot(tmp_path), tmp_path / "small-disk"
    disk.mkdir()
    # A 64 MB filesystem in a mount namespace of its own: gone when the command ends.
    script = f'mount -t tmpfs -o size=64m tmpfs "{disk}" && exec "$@"'
    bin_dir = _bin_dir(tmp_path, PYTHONS, {"python3": _python("3.11")})
    wrap = ("unshare", "--mount", "sh", "-c", script, "sh")
    result = _run(root, disk / "cache", wrap=wrap, PATH=str(bin_dir))
    assert result.returncode != 0
    lines = _own_lines(result)
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        rf"bootstrap failed: only \d+ MB free on the disk holding {re.escape(str(disk / 'cache'))}; "
        r"the bootstrap needs 500 MB \(Pants' caches a few GB more\)",
        lines[0],
    ), lines[0]


def test_without_apt_bootstraps_and_generates_the_protos(tmp_path: Path) -> None:
    """A machine with Python 3.9 and 3.11 but no apt-get/dpkg, empty caches: Pants runs and protoc
    with the gRPC plugin (from PyPI) writes the project's generated modules."""
    root = _buildroot(tmp_path, protos=True)
    cache = tmp_path / "cache"
    bin_dir = _bin_dir(
        tmp_path, re.compile(f"{PYTHONS.pattern}|{NO_APT.pattern}"),
        {"python3": _python("3.11"), "python3.11": _python("3.11"), "python3.9": _python("3.9")},
    )
    path = str(bin_dir)
    first = _run(root, cache, PATH=path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "2.17.1"
    assert "[bootstrap] ready" in first.stderr
    assert "Debian" not in first.stderr
    rc = (cache / "pants.rc").read_text()
    assert not (root / ".pants.rc").exists()
    assert f"file://{cache}/tools/protoc-{{version}}.tar.gz" in rc
    assert f"file://{cache}/tools/grpc_python_plugin-{{version}}" in rc

    second = _run(root, cache, PATH=path)
    assert second.returncode == 0, second.stderr
    assert "[bootstrap]" not in second.stderr

    # Empty named caches and store: every artifact is downloaded, with this machine's pip settings
    # in place.
    codegen = _run(
        root, cache, f"--named-caches-dir={tmp_path / 'named'}", f"--local-store-dir={tmp_path / 'store'}",
        "export-codegen", "src/protos::", PATH=path,
    )
    assert codegen.returncode == 0, codegen.stderr[-4000:]
    out = root / "dist" / "codegen" / "src" / "protos" / "clothing_protos"
    assert (out / "prediction_service_pb2_grpc.py").read_text().count("class PredictionServiceStub") == 1
    assert "class PredictionServiceServicer" in (out / "prediction_service_pb2_grpc.py").read_text()
    assert (out / "tensor_pb2.py").is_file()
    assert (out / "tensor_pb2.pyi").is_file()
    # The generated modules load with the project's runtimes and the services keep TF Serving's names.
    check = subprocess.run(
        [_python("3.11"), "-c", "from clothing_protos import prediction_service_pb2 as p; "
         "print(p.DESCRIPTOR.services_by_name['PredictionService'].full_name)"],
        cwd=out.parent,
        env={"PYTHONPATH": str(cache / "venv-tools" / "lib" / "python3.11" / "site-packages")},
        capture_output=True, text=True, check=False,
    )
    assert check.stdout.strip() == "tensorflow.serving.PredictionService", check.stderr


def _locked_version(lockfile: Path, project: str) -> tuple[int, ...]:
    match = re.search(
        rf'"project_name": "{re.escape(project)}",.*?"version": "([0-9.]+)"', lockfile.read_text(), re.S
    )
    assert match, f"{project} is not in {lockfile}"
    return tuple(int(p) for p in match.group(1).split("."))


def test_generator_pins_are_within_the_locked_runtimes() -> None:
    """grpcio-tools' stubs refuse an older grpcio, its protoc's code an older protobuf."""
    launcher = (_source_root() / "pants").read_text()
    tools = re.search(r'GRPCIO_TOOLS_VERSION="([0-9.]+)"', launcher)
    protoc = re.search(r'PROTOC_VERSION="([0-9.]+)"', launcher)
    assert tools
    assert protoc
    for lock in ("default.lock", "tensorflow.lock"):
        path = _source_root() / "3rdparty" / "python" / lock
        assert _locked_version(path, "grpcio") >= tuple(int(p) for p in tools.group(1).split("."))
        # protobuf 7.X.Y runs code from protoc X.Y and older.
        assert _locked_version(path, "protobuf")[1:] >= tuple(int(p) for p in protoc.group(1).split("."))


def test_every_alias_names_a_target_that_exists() -> None:
    """`./pants stack` and friends expand to addresses: a renamed target must not leave one dangling."""
    root = _source_root()
    aliases = tomllib.loads((root / "pants.toml").read_text())["cli"]["alias"]
    assert {"stack", "export-model", "images"} <= aliases.keys()
    for name, expansion in aliases.items():
        goal, *addresses = expansion.split()
        assert goal in {"run", "package"}, name
        for address in addresses:
            path, _, target = address.partition(":")
            assert (root / path).exists(), f"alias {name}: {path} does not exist"
            if goal == "run":
                # The one way to run a program: `src/python/<package>:<package>`.
                assert target == Path(path).name, f"alias {name}: {address} is not {path}:{Path(path).name}"
            if (root / path).is_dir():
                build = (root / path / "BUILD").read_text()
                assert f'name="{target or Path(path).name}"' in build, f"alias {name}: no target {address}"


def test_every_program_is_a_binary_named_after_its_package() -> None:
    """`./pants run src/python/<package>:<package>` runs any program: no file or odd target names.

    Binaries of third-party tools (a `script=`, no `entry_point=` of ours) are the tests' tools.
    """
    root = _source_root() / "src" / "python"
    binaries: dict[str, str] = {}
    for build in sorted(root.rglob("BUILD")):
        for block in build.read_text().split("pex_binary(")[1:]:
            body = block.split("\n)\n")[0]
            if "entry_point=" not in body:
                continue
            target = re.search(r'^\s*name="([^"]+)"', body, re.MULTILINE)
            assert target, f"{build}: a pex_binary without a name"
            binaries[f"{build.parent.relative_to(root)}:{target.group(1)}"] = build.parent.name
    assert "local_stack:local_stack" in binaries
    wrong = [address for address, package in binaries.items() if address.partition(":")[2] != package]
    assert not wrong, f"binaries not named after their package: {wrong}"
