"""The prometheus-operator component on the kind and EKS overlays: it renders, every object
validates (Kubernetes' schemas for the overlay, the operator's CRD schemas for the PodMonitors and
the PrometheusRule), and the PodMonitors point at the ports and paths the pods serve metrics on."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
from pathlib import Path

import pytest
import yaml
from monitoring_checks.bundle import COMPONENT_DIR, rule_groups

from deploy_checks.k8s_manifests import Manifest, containers, find, render
from deploy_checks.testlib import DEPLOY_DIR, apt_install, run, tool

KUBERNETES_VERSION = "1.35.0"  # deploy_checks/kubernetes_test.py's: what both clusters run
OPERATOR_KINDS = ("PodMonitor", "PrometheusRule")
# The operator's CRD schemas, compiled (npm); pinned so a schema change is a reviewed change.
CRD_MODELS = "@kubernetes-models/prometheus-operator@6.0.0"
VALIDATOR = Path(__file__).with_name("validate_custom_resources.mjs")
MONITORING_CONFIG = DEPLOY_DIR / "images" / "model" / "monitoring.config"


def _with_component(overlay: str, workdir: Path) -> list[Manifest]:
    """An overlay with the component added, the way README tells users to add it."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY_DIR / overlay, workdir)],
        "components": [os.path.relpath(COMPONENT_DIR, workdir)],
    }))
    return render(workdir)


@pytest.fixture(scope="module", params=["kind", "eks"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return _with_component(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def crd_validator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the compiled CRD schemas (npm) and the validator script beside them."""
    if not (shutil.which("node") and shutil.which("npm")):
        apt_install("nodejs", "npm")
    caches = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = caches / "clothing-classifier" / "operator-crds"
    cache.mkdir(parents=True, exist_ok=True)
    installed = cache / "node_modules" / "@kubernetes-models" / "prometheus-operator" / "package.json"
    wanted = CRD_MODELS.rsplit("@", 1)[1]
    if not installed.is_file() or json.loads(installed.read_text())["version"] != wanted:
        run(["npm", "install", "--prefix", cache, "--no-audit", "--no-fund", "--no-save", CRD_MODELS],
            env=_npm_environment(cache), timeout=600)
    shutil.copy(VALIDATOR, cache / VALIDATOR.name)
    return cache


def _npm_environment(cache: Path) -> dict[str, str]:
    """What npm needs that a test sandbox lacks: a home and cache of its own, and the system's CA
    store (node trusts only its built-in roots unless told, and TLS may pass a machine's own)."""
    env = {**os.environ, "HOME": str(Path.home()), "npm_config_cache": str(cache / ".npm")}
    paths = ssl.get_default_verify_paths()
    system_roots = next((f for f in (paths.cafile, paths.openssl_cafile) if f and Path(f).is_file()), None)
    if system_roots:
        env.setdefault("NODE_EXTRA_CA_CERTS", system_roots)
    return env


def _validate_custom(validator: Path, objects: list[Manifest], tmp_path: Path) -> tuple[int, str]:
    listed = tmp_path / "objects.json"
    listed.write_text(json.dumps(objects))
    result = run(["node", validator / VALIDATOR.name, listed], check=False)
    return result.returncode, result.stdout + result.stderr


def test_the_component_adds_two_pod_monitors_and_the_rules(rendered: list[Manifest]) -> None:
    assert sorted(m["metadata"]["name"] for m in find(rendered, "PodMonitor")) == ["gateway", "tf-serving"]
    (rule,) = find(rendered, "PrometheusRule")
    # kustomize passes the rules through untouched.
    assert rule["spec"]["groups"] == rule_groups()
    namespace = find(rendered, "Namespace")[0]["metadata"]["name"]
    for obj in rendered:
        if obj["kind"] in OPERATOR_KINDS:
            assert obj["metadata"]["namespace"] == namespace


def test_the_overlay_still_validates_against_kubernetes(rendered: list[Manifest], tmp_path: Path) -> None:
    builtin = [m for m in rendered if m["kind"] not in OPERATOR_KINDS]
    listed = tmp_path / "builtin.yaml"
    listed.write_text(yaml.safe_dump_all(builtin))
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", listed], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count(" passed for resource ") == len(builtin)


def test_operator_objects_validate_against_the_crd_schemas(
    rendered: list[Manifest], crd_validator: Path, tmp_path: Path
) -> None:
    custom = [m for m in rendered if m["kind"] in OPERATOR_KINDS]
    code, output = _validate_custom(crd_validator, custom, tmp_path)
    assert code == 0, output
    assert output.count("valid ") == len(custom) == 3


def test_the_crd_check_refuses_a_bad_object(
    rendered: list[Manifest], crd_validator: Path, tmp_path: Path
) -> None:
    monitor = json.loads(json.dumps(find(rendered, "PodMonitor", "gateway")[0]))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    rule = json.loads(json.dumps(find(rendered, "PrometheusRule")[0]))
    rule["spec"]["groups"][0]["rules"][0].pop("expr")
    code, output = _validate_custom(crd_validator, [monitor, rule], tmp_path)
    assert code != 0
    assert "invalid PodMonitor gateway" in output
    assert "podMetricsEndpoints/0/interval" in output
    assert "invalid PrometheusRule clothing-classifier" in output
    assert "expr" in output


def test_each_pod_monitor_scrapes_a_port_its_pods_serve_metrics_on(rendered: list[Manifest]) -> None:
    tf_serving_path = re.search(r'path:\s*"([^"]+)"', MONITORING_CONFIG.read_text())
    assert tf_serving_path is not None
    served = {"tf-serving": tf_serving_path.group(1), "gateway": "/metrics"}
    for monitor in find(rendered, "PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        workloads = [
            d for d in find(rendered, "Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(workloads) == 1, monitor["metadata"]["name"]
        (workload,) = workloads
        labels = workload["spec"]["template"]["metadata"]["labels"]
        # The rules' up{job=~"gateway|tf-serving"}: the job is the pods' value of jobLabel.
        job = labels[monitor["spec"]["jobLabel"]]
        assert job == monitor["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, (job, endpoint["port"], ports)
            assert endpoint["path"] == served[job]
            # The annotations plain Prometheus discovers pods by say the same.
            notes = workload["spec"]["template"]["metadata"]["annotations"]
            assert notes["prometheus.io/scrape"] == "true"
            assert notes["prometheus.io/path"] == endpoint["path"]
            assert int(notes["prometheus.io/port"]) == ports[endpoint["port"]]


@pytest.mark.parametrize("job", ["tf-serving", "gateway"])
def test_the_network_policy_admits_prometheus_to_each_metrics_port(
    rendered: list[Manifest], job: str
) -> None:
    monitor = find(rendered, "PodMonitor", job)[0]
    deployment = find(rendered, "Deployment", job)[0]
    ports = {p["name"]: p["containerPort"] for c in containers(deployment) for p in c.get("ports", [])}
    port = ports[monitor["spec"]["podMetricsEndpoints"][0]["port"]]
    admitted = [
        source
        for policy in find(rendered, "NetworkPolicy")
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == job
        for rule in policy["spec"].get("ingress", [])
        if any(p.get("port") == port for p in rule.get("ports", []))
        for source in rule.get("from", [{}])
    ]
    # Prometheus runs in another namespace (kube-prometheus-stack's "monitoring").
    assert any("namespaceSelector" in source or not source for source in admitted), (job, port, admitted)
