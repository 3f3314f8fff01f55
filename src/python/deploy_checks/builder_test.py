"""The builder container (deploy/builder): `./pants package` of the gateway image run inside it, as
on a host that cannot build the images itself, against a real Docker daemon.

Needs root (it installs and starts Debian's Docker engine if none runs); CI runs it that way. The
builder is built from a bookworm base made from Debian's archive (Docker Hub is out of reach here),
and runs on the host's network (the test daemon has no bridge). Its caches stay in the named
volume, so a second run needs no bootstrap. The checkout is the real one (CLOTHING_BUILD_ROOT):
the builder mounts it, as it mounts a user's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from deploy_checks.docker_support import Docker, base_image, docker_daemon
from deploy_checks.testlib import build_root, run

VOLUME = "clothing-builder-cache"


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with docker_daemon() as daemon:
        yield daemon


def _builder(docker: Docker, *args: str, tag: str) -> tuple[str, str]:
    base = base_image(docker)
    env = {
        **docker.env,
        "CLOTHING_BUILDER_BASE": base,
        "CLOTHING_BUILDER_NETWORK": "host",
        "BASE_IMAGE": base,
        "IMAGE_TAG": tag,
    }
    result = run([build_root() / "deploy/builder/pants.sh", *args], env=env, timeout=2400)
    return result.stdout, result.stderr


def test_the_builder_packages_the_gateway_image_and_keeps_its_caches(docker: Docker) -> None:
    tag = f"builder-{uuid.uuid4().hex[:8]}"
    name = f"clothing-gateway:{tag}"
    try:
        _builder(docker, "package", "deploy/images/gateway", tag=tag)
        version = '{{index .Config.Labels "org.opencontainers.image.version"}}'
        assert docker("image", "inspect", "--format", version, name).stdout.strip() == tag
        arch = docker("image", "inspect", "--format", "{{.Architecture}}", name).stdout.strip()
        assert arch == "amd64"
        # The PEX inside was built for Linux: its compiled wheels import in the image (the
        # entrypoint's interpreter mode runs code in the gateway's venv).
        imports = docker(
            "run", "--rm", "--network", "host", "--env", "PEX_INTERPRETER=1", name,
            "-c", "import numpy, grpc, PIL.Image, gateway.main; print('ok')",
        )  # fmt: skip
        assert imports.stdout.strip() == "ok"

        # The volume holds the bootstrap: the next run goes straight to Pants.
        stdout, stderr = _builder(docker, "--version", tag=tag)
        assert stdout.strip().splitlines()[-1] == "2.17.1"
        assert "[bootstrap]" not in stderr
        assert docker("volume", "inspect", VOLUME, check=False).returncode == 0
    finally:
        docker("image", "rm", "--force", name, check=False)
