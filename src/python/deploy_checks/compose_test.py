"""deploy/compose/compose.yaml passes docker-compose's own validation and keeps its promises."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml

from deploy_checks.k8s_manifests import containers, one, render
from deploy_checks.testlib import DEPLOY_DIR, apt_install, run

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
        assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"]), name


@pytest.fixture(scope="module")
def kubernetes() -> list[dict[str, Any]]:
    return render("base")


def test_gateway_runs_with_the_kubernetes_settings(
    resolved: dict[str, Any], kubernetes: list[dict[str, Any]]
) -> None:
    # The same limits and bounds as the pods: what is measured and documented for one holds for
    # the other. Only the model's address differs (compose's service name).
    config = one(kubernetes, "ConfigMap", "gateway-config")["data"]
    environment = {k: str(v) for k, v in resolved["services"]["gateway"]["environment"].items()}
    assert environment.pop("TF_SERVING_HOST") == "tf-serving:8500"
    config = {k: v for k, v in config.items() if k != "TF_SERVING_HOST"}
    assert environment == config


def _mib(quantity: Any) -> int:
    text = str(quantity)
    for suffix, factor in (("Mi", 1), ("Gi", 1024), ("m", 1), ("g", 1024)):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text) // 2**20  # docker-compose resolves mem_limit to bytes


def test_memory_and_tmp_are_the_pods_measured_sizes(
    resolved: dict[str, Any], kubernetes: list[dict[str, Any]]
) -> None:
    services = resolved["services"]

    def pod(name: str) -> dict[str, Any]:
        return one(kubernetes, "Deployment", name)

    tf_limit = next(iter(containers(pod("tf-serving"))))["resources"]["limits"]["memory"]
    assert _mib(services["tf-serving"]["mem_limit"]) == _mib(tf_limit)
    # The gateway's /tmp is a tmpfs here, memory counted in mem_limit: the pod's memory limit plus
    # its /tmp emptyDir's size.
    gateway_limit = _mib(next(iter(containers(pod("gateway"))))["resources"]["limits"]["memory"])
    (tmp,) = (v for v in pod("gateway")["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    tmp_mib = _mib(tmp["emptyDir"]["sizeLimit"])
    (tmpfs,) = services["gateway"]["tmpfs"]
    assert tmpfs == f"/tmp:size={tmp_mib}m"
    assert _mib(services["gateway"]["mem_limit"]) == gateway_limit + tmp_mib
