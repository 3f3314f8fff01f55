"""deploy/compose/compose.yaml passes docker-compose's own validation and keeps its promises."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml
from deploy_testlib import DEPLOY_DIR, apt_install, run

COMPOSE_FILE = DEPLOY_DIR / "compose/compose.yaml"


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as docker-compose resolves it (variables substituted, syntax checked)."""
    if shutil.which("docker-compose") is None:
        # Debian's docker-compose (v1.29): validates offline, no daemon needed for `config`.
        apt_install("docker-compose")
    result = run(
        ["docker-compose", "-f", COMPOSE_FILE, "config"], env={"PATH": "/usr/bin:/bin", "IMAGE_TAG": "abc"}
    )
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_rejects_a_broken_file(tmp_path: Any) -> None:
    # The validation above can fail: a misspelt key is refused.
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE_FILE.read_text().replace("depends_on:", "depend_on:"))
    if shutil.which("docker-compose") is None:
        apt_install("docker-compose")
    result = run(["docker-compose", "-f", bad, "config"], env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode != 0
    assert "depend_on" in result.stderr


def test_both_tiers_use_the_images_pants_builds(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["gateway"]["image"] == "clothing-gateway:abc"
    assert services["tf-serving"]["image"] == "clothing-model:abc"


def test_gateway_waits_for_a_healthy_model_and_is_the_only_public_port(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["gateway"]["depends_on"] == {"tf-serving": {"condition": "service_healthy"}}
    assert services["tf-serving"]["healthcheck"]["test"] == ["CMD", "/usr/local/bin/model-ready"]
    assert "/readyz" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert [p["published"] for p in services["gateway"]["ports"]] == [9696]
    assert "ports" not in services["tf-serving"]
    assert services["gateway"]["environment"]["TF_SERVING_HOST"] == "tf-serving:8500"


def test_containers_are_locked_down_as_in_kubernetes(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        # PID 1 reaps children and forwards signals.
        assert service["init"] is True, name
        assert "/tmp" in service["tmpfs"], name
