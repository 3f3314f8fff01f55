"""The kustomize base and its overlays: they render, validate against a pinned Kubernetes, and
meet the project's production policy (probes, resources, locked-down pods, network isolation,
autoscaling, disruption budgets, labels)."""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_checks.k8s_manifests import Manifest, containers, find, one, render
from deploy_checks.testlib import DEPLOY_DIR, run, tool
from gateway.serving import DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS
from gateway.settings import VARIABLES, parse_settings

# The Kubernetes both clusters run (deploy/eks/cluster.yaml, deploy/kind/cluster.yaml's node image).
KUBERNETES_VERSION = "1.35.0"
OVERLAYS = ["base", "kind", "eks"]
WORKLOADS = ["gateway", "tf-serving"]
CONNECTION_SETTINGS = (
    "GATEWAY_MAX_CONNECTIONS",
    "GATEWAY_MAX_HEADER",
    "GATEWAY_HEADER_TIMEOUT",
    "GATEWAY_BODY_TIMEOUT",
    "GATEWAY_IDLE_TIMEOUT",
    "GATEWAY_CONNECTION_LOG_INTERVAL",
)
REQUIRED_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name: str = request.param
    return name, render(name)


def _deployment(manifests: list[Manifest], name: str) -> Manifest:
    return one(manifests, "Deployment", name)


def _container(manifests: list[Manifest], name: str) -> Manifest:
    return next(iter(containers(_deployment(manifests, name))))


def test_every_overlay_validates_against_the_pinned_kubernetes_schemas(
    overlay: tuple[str, list[Manifest]], tmp_path: Path
) -> None:
    name, manifests = overlay
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(yaml.safe_dump_all(manifests))
    # --strict: unknown fields are errors (a misspelt probe field would otherwise be dropped
    # silently by the API server).
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", rendered], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every object was checked against a schema, none skipped as unknown.
    assert result.stdout.count(" passed for resource ") + result.stderr.count(" passed for resource ") == len(
        manifests
    )


def test_the_validator_rejects_a_misspelt_field(tmp_path: Path) -> None:
    # The check above must be able to fail: the same manifests with one typo do not pass.
    manifests = render("base")
    _deployment(manifests, "gateway")["spec"]["strategy"]["rollingUpdate"]["maxSurgee"] = 1
    rendered = tmp_path / "typo.yaml"
    rendered.write_text(yaml.safe_dump_all(manifests))
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", rendered], check=False)
    assert result.returncode != 0
    assert "maxSurgee" in result.stdout + result.stderr


def test_everything_carries_the_recommended_labels(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    for manifest in manifests:
        labels = manifest["metadata"].get("labels", {})
        missing = [
            label for label in REQUIRED_LABELS if label not in labels and manifest["kind"] != "Namespace"
        ]
        assert not missing, f"{manifest['kind']}/{manifest['metadata']['name']} lacks {missing}"
    for name in WORKLOADS:
        pod_labels = _deployment(manifests, name)["spec"]["template"]["metadata"]["labels"]
        assert set(REQUIRED_LABELS) <= set(pod_labels)
        assert pod_labels["app.kubernetes.io/name"] == name


def test_pods_are_locked_down(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    for name in WORKLOADS:
        pod = _deployment(manifests, name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The user the images declare (USER 10001:10001), so file ownership in them matches.
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert not pod.get("hostNetwork")
        assert not pod.get("hostPID")
        for container in containers(_deployment(manifests, name)):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in security["capabilities"], name
            assert not security.get("privileged"), name
            # A read-only root needs somewhere to write temporary files.
            assert "/tmp" in [mount["mountPath"] for mount in container["volumeMounts"]]


def test_containers_have_requests_limits_and_probes(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    for name in WORKLOADS:
        for container in containers(_deployment(manifests, name)):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{name} {kind}"
            # Memory is not overcommitted: the OOM killer never picks these pods first.
            assert _bytes(resources["limits"]["memory"]) >= _bytes(resources["requests"]["memory"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{name} has no {probe}"
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_gateway_probes_ask_readiness_and_health_separately(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    gateway = _container(manifests, "gateway")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports["http"] == 9696
    assert gateway["readinessProbe"]["httpGet"]["port"] == "http"


def test_tf_serving_is_ready_only_when_the_model_is_available(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    tf_serving = _container(manifests, "tf-serving")
    # GET /v1/models/<name> is 200 while loading, so readiness must not be a plain httpGet.
    for probe in ("startupProbe", "readinessProbe"):
        assert "httpGet" not in tf_serving[probe]
        assert tf_serving[probe]["exec"]["command"] == ["/usr/local/bin/model-ready"]
    assert tf_serving["livenessProbe"]["grpc"]["port"] == 8500
    args = tf_serving["args"]
    assert "--enable_grpc_healthcheck_service=true" in args  # the liveness probe asks it
    assert "--enable_batching=true" in args
    assert "--enable_model_warmup=true" in args


def test_tf_serving_args_point_at_files_the_model_image_contains(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    args = _container(manifests, "tf-serving")["args"]
    files = {value for arg in args if (value := arg.partition("=")[2]).startswith("/")}
    assert files, "expected the batching and monitoring files"
    dockerfile = (DEPLOY_DIR / "images/model/Dockerfile").read_text()
    copied = _copied_paths(dockerfile) | set(_configmap_files(manifests, "tf-serving"))
    for path in files:
        assert path in copied, f"{path}: not in the model image nor a mounted ConfigMap: {sorted(copied)}"
    assert "/usr/local/bin/model-ready" in copied


def _configmap_files(manifests: list[Manifest], workload: str) -> dict[str, str]:
    """The files a workload's ConfigMap volumes put in its first container: path -> content."""
    pod = _deployment(manifests, workload)["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    files: dict[str, str] = {}
    for mount in _container(manifests, workload).get("volumeMounts", []):
        if mount["name"] in volumes:
            data = one(manifests, "ConfigMap", volumes[mount["name"]])["data"]
            for key, text in data.items():
                files[mount.get("subPath") and mount["mountPath"] or f"{mount['mountPath']}/{key}"] = text
    return files


def test_tf_serving_takes_its_versions_and_labels_from_a_configmap_it_rereads(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, manifests = overlay
    flags = _flags(_tf_serving_argv(manifests))
    config = _configmap_files(manifests, "tf-serving")[flags["model_config_file"]]
    # A directory mount: the kubelet updates a ConfigMap volume in place, never a subPath of one.
    mounts = _container(manifests, "tf-serving")["volumeMounts"]
    (mount,) = (m for m in mounts if m["name"] == "models-config")
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    # Not hash-suffixed: a changed config must reach the running pods, not roll them.
    assert find(manifests, "ConfigMap", "tf-serving-models")[0]["metadata"]["name"] == "tf-serving-models"
    assert 0 < float(flags["model_config_file_poll_wait_seconds"]) <= 30
    # The first config labels its versions, which TF Serving refuses at start without this.
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    # The model the gateway asks for, served from where the image bakes it, under both of the
    # gateway's labels (at 0 % it asks for neither, and one version is the latest).
    data = one(manifests, "ConfigMap", "gateway-config")["data"]
    assert f'name: "{data["GATEWAY_MODEL_NAME"]}"' in config
    assert f'base_path: "{flags["model_base_path"]}"' in config
    for label in (data["GATEWAY_STABLE_LABEL"], data["GATEWAY_CANARY_LABEL"]):
        assert re.search(rf'version_labels {{ key: "{label}" value: 1 }}', config), label
    assert "model_version_policy { specific { versions: 1 } }" in config


def test_the_canary_percent_is_the_gateways_own_env_and_starts_at_zero(
    overlay: tuple[str, list[Manifest]],
) -> None:
    # `kind.sh canary PERCENT` sets it with `kubectl set env`, a re-apply sets it back to 0.
    _, manifests = overlay
    env = {e["name"]: e["value"] for e in _container(manifests, "gateway")["env"]}
    assert env == {"GATEWAY_CANARY_PERCENT": "0"}
    data = one(manifests, "ConfigMap", "gateway-config")["data"]
    assert "GATEWAY_CANARY_PERCENT" not in data
    assert parse_settings([], {**data, **env}).rollout.canary_percent == 0


def _copied_paths(dockerfile: str) -> set[str]:
    """The files a Dockerfile's COPY lines create (destination dir + source basename)."""
    paths: set[str] = set()
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0] != "COPY":
            continue
        *sources, destination = (w for w in words[1:] if not w.startswith("--"))
        for source in sources:
            if destination.endswith("/"):
                paths.add(destination + Path(source).name)
            else:
                paths.add(destination)
    return paths


TF_SERVING_BINARY = "/usr/bin/tensorflow_model_server"
# From a pod's deletion until CoreDNS leaves it out of the headless Service's answer: the
# EndpointSlice update (a second or two) plus the answer's TTL (CoreDNS's kubernetes plugin: 5 s).
ENDPOINT_AND_DNS_DELAY = 10
# After the preStop pause the kubelet sends SIGTERM; TF Serving (not PID 1) dies of it at once.
# The grace period leaves this much beyond the pause before SIGKILL.
AFTER_PRESTOP = 10


def _exec_form(dockerfile: str, instruction: str) -> list[str] | None:
    """The last ENTRYPOINT or CMD of a Dockerfile as an argv (exec form), None if absent."""
    found = None
    for line in re.sub(r"\\\n\s*", " ", dockerfile).splitlines():
        if line.startswith(f"{instruction} "):
            value = line.split(None, 1)[1].strip()
            assert value.startswith("["), f"{instruction} in shell form runs /bin/sh -c: {value}"
            found = json.loads(value)
    return found


def _tf_serving_argv(manifests: list[Manifest]) -> list[str]:
    """What the TF Serving container runs: Kubernetes' `command` replaces the image's ENTRYPOINT,
    `args` its CMD (and a `command` without `args` drops the CMD)."""
    container = _container(manifests, "tf-serving")
    dockerfile = (DEPLOY_DIR / "images/model/Dockerfile").read_text()
    entrypoint = container.get("command", _exec_form(dockerfile, "ENTRYPOINT") or [])
    if "args" in container:
        args = container["args"]
    else:
        args = [] if "command" in container else _exec_form(dockerfile, "CMD") or []
    return [*entrypoint, *args]


def _flags(argv: list[str]) -> dict[str, str]:
    flags = [a.removeprefix("--").partition("=") for a in argv[1:]]
    assert all(a.startswith("--") and "=" in a for a in argv[1:]), argv
    names = [name for name, _, _ in flags]
    assert len(names) == len(set(names)), f"a flag given twice: {argv}"
    return {name: value for name, _, value in flags}


def test_tf_serving_runs_the_binary_itself_with_every_flag(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    argv = _tf_serving_argv(manifests)
    # The server is the container's process: no shell between it and the stop signal.
    assert argv[0] == TF_SERVING_BINARY, argv
    assert Path(argv[0]).name not in ("sh", "bash", "dash", "tf_serving_entrypoint.sh")
    assert "-c" not in argv
    flags = _flags(argv)
    ports = {p["name"]: p["containerPort"] for p in _container(manifests, "tf-serving")["ports"]}
    model = one(manifests, "ConfigMap", "gateway-config")["data"]["GATEWAY_MODEL_NAME"]
    # What the official image's tf_serving_entrypoint.sh passes, then what the deployment adds.
    assert flags["port"] == str(ports["grpc"])
    assert flags["rest_api_port"] == str(ports["http"])
    assert flags["model_name"] == model
    assert flags["model_base_path"] == f"/models/{model}"
    assert flags["enable_batching"] == "true"
    assert flags["batching_parameters_file"] == "/etc/tf-serving/batching_parameters.txt"
    assert flags["enable_model_warmup"] == "true"
    assert flags["enable_grpc_healthcheck_service"] == "true"  # the liveness probe asks it
    assert flags["monitoring_config_file"] == "/etc/tf-serving/monitoring.config"
    assert "grpc.max_connection_age_ms=" in flags["grpc_channel_arguments"]
    assert flags["tensorflow_intra_op_parallelism"] == flags["tensorflow_inter_op_parallelism"] == "2"
    # TF Serving has no SIGTERM handler: as PID 1 of its PID namespace the kernel would drop the
    # signal. With the pod's namespace shared, the pause process is PID 1.
    pod = _deployment(manifests, "tf-serving")["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True


def test_the_argv_check_sees_a_shell_wrapper() -> None:
    manifests = render("base")
    container = _container(manifests, "tf-serving")
    container["command"] = ["/usr/bin/tf_serving_entrypoint.sh"]
    assert _tf_serving_argv(manifests)[0] != TF_SERVING_BINARY
    del container["args"]
    assert _tf_serving_argv(manifests) == ["/usr/bin/tf_serving_entrypoint.sh"]  # CMD dropped
    with pytest.raises(AssertionError, match="shell form"):
        _exec_form('ENTRYPOINT tensorflow_model_server --port=8500\n', "ENTRYPOINT")


def _stop_bound(manifests: list[Manifest]) -> float:
    """Seconds from a TF Serving pod's deletion until no gateway sends it a call (tf-serving.yaml's
    preStop comment spells it out)."""
    arguments = _flags(_tf_serving_argv(manifests))["grpc_channel_arguments"]
    channel = dict(pair.split("=", 1) for pair in arguments.split(","))
    age = int(channel["grpc.max_connection_age_ms"]) / 1000
    age_grace = int(channel["grpc.max_connection_age_grace_ms"]) / 1000
    settings = parse_settings([], one(manifests, "ConfigMap", "gateway-config")["data"])
    return (
        ENDPOINT_AND_DNS_DELAY
        + age * 1.1  # gRPC adds up to 10 % jitter to the max connection age
        + DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS / 1000
        + min(settings.serving.timeout, age_grace)  # calls already on the closing connection
    )


def test_tf_serving_stops_only_once_gateways_have_left_it(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    pod = _deployment(manifests, "tf-serving")["spec"]["template"]["spec"]
    pre_stop = _container(manifests, "tf-serving")["lifecycle"]["preStop"]["sleep"]["seconds"]
    bound = _stop_bound(manifests)
    assert pre_stop >= bound, f"preStop {pre_stop} s < {bound:.0f} s"
    assert pre_stop <= bound + 30, f"preStop {pre_stop} s holds the pod {pre_stop - bound:.0f} s too long"
    # SIGKILL only as a backstop: the grace period runs from the deletion, preStop included.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + AFTER_PRESTOP
    # The gateway balances over the pods (so a retry reaches another one).
    data = one(manifests, "ConfigMap", "gateway-config")["data"]
    assert data["GATEWAY_GRPC_LOAD_BALANCING"] == "round_robin"


def test_the_stop_bound_grows_with_the_connection_age() -> None:
    manifests = render("base")
    container = _container(manifests, "tf-serving")
    container["args"] = [
        a.replace("max_connection_age_ms=60000", "max_connection_age_ms=120000") for a in container["args"]
    ]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert _stop_bound(manifests) > pre_stop


def test_rollouts_surge_before_removing_capacity(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    for name in WORKLOADS:
        strategy = _deployment(manifests, name)["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_every_workload_has_an_autoscaler_and_a_disruption_budget(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, manifests = overlay
    for name in WORKLOADS:
        deployment = _deployment(manifests, name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

        hpa = one(manifests, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # Utilization is a percentage of the request: without one the HPA cannot compute it.
        assert "cpu" in next(iter(containers(deployment)))["resources"]["requests"]

        pdb = one(manifests, "PodDisruptionBudget", name)
        assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        # maxUnavailable never blocks a node drain, whatever the replica count.
        assert pdb["spec"]["maxUnavailable"] == 1


def test_services_reach_their_pods_by_named_ports(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    for service in find(manifests, "Service"):
        backends = [
            d
            for d in find(manifests, "Deployment")
            if _selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(backends) == 1, service["metadata"]["name"]
        names = {p["name"] for c in containers(backends[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_grpc_goes_through_a_headless_service(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    headless = one(manifests, "Service", "tf-serving-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in headless["spec"]["ports"]] == [8500]
    # The gateway resolves it and balances over every pod address it returns.
    config = one(manifests, "ConfigMap", "gateway-config")
    assert config["data"]["TF_SERVING_HOST"] == "tf-serving-headless:8500"
    assert config["data"]["GATEWAY_GRPC_LOAD_BALANCING"] == "round_robin"
    env_from = _container(manifests, "gateway")["envFrom"]
    assert [e["configMapRef"]["name"] for e in env_from] == [config["metadata"]["name"]]


def test_gateway_config_sets_only_real_settings_and_bounds_every_connection(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, manifests = overlay
    data = one(manifests, "ConfigMap", "gateway-config")["data"]
    known = {variable.name for variable in VARIABLES}
    assert set(data) <= known, f"not gateway settings: {sorted(set(data) - known)}"
    # Every connection bound is explicit in the pod spec, and valid.
    limits = parse_settings([], data).connections
    for name in known:
        if name.startswith(CONNECTION_SETTINGS):
            assert name in data, name
    assert limits.max_connections <= 4096
    assert limits.header_timeout < 30


# NetworkPolicy semantics for pods of one namespace: a pod selected by no Ingress policy accepts
# everything; a selected pod accepts a connection if some selecting policy's rule matches both
# the source pod and the port.
def _allowed(
    policies: list[Manifest], source: dict[str, str] | None, target: dict[str, str], port: int
) -> bool:
    selecting = [
        p
        for p in policies
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"].get("matchLabels", {}), target)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            # A peer with only a podSelector means pods of the policy's own namespace.
            peer_ok = peers is None or any(
                source is not None
                and set(peer) == {"podSelector"}
                and _selects(peer["podSelector"].get("matchLabels", {}), source)
                for peer in peers
            )
            ports = rule.get("ports")
            port_ok = ports is None or any(p.get("port") == port for p in ports)
            if peer_ok and port_ok:
                return True
    return False


def test_only_the_gateway_reaches_tf_serving(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    policies = find(manifests, "NetworkPolicy")
    tf_serving = _deployment(manifests, "tf-serving")["spec"]["template"]["metadata"]["labels"]
    gateway = _deployment(manifests, "gateway")["spec"]["template"]["metadata"]["labels"]
    intruder = {"app.kubernetes.io/name": "debug-shell"}
    tf_ports = [
        p["containerPort"] for c in containers(_deployment(manifests, "tf-serving")) for p in c["ports"]
    ]
    assert sorted(tf_ports) == [8500, 8501]
    for port in tf_ports:
        assert _allowed(policies, gateway, tf_serving, port)
        assert not _allowed(policies, intruder, tf_serving, port)
        assert not _allowed(policies, None, tf_serving, port)  # another namespace, the internet
    # The gateway is the public tier, on its HTTP port only.
    assert _allowed(policies, None, gateway, 9696)
    assert not _allowed(policies, None, gateway, 22)
    assert not _allowed(policies, intruder, intruder, 8080)  # anything else added later: closed


def test_namespace_enforces_the_restricted_pod_security_standard(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    namespace = one(manifests, "Namespace", "clothing")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {m["metadata"].get("namespace", "clothing") for m in manifests} == {"clothing"}


def test_base_and_eks_run_several_gateways_for_availability() -> None:
    for name in ("base", "eks"):
        manifests = render(name)
        assert one(manifests, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] >= 2
        assert one(manifests, "HorizontalPodAutoscaler", "tf-serving")["spec"]["minReplicas"] >= 2


def test_kind_exposes_the_gateway_on_the_port_the_cluster_maps() -> None:
    manifests = render("kind")
    service = one(manifests, "Service", "gateway")
    assert service["spec"]["type"] == "NodePort"
    cluster = yaml.safe_load((DEPLOY_DIR / "kind/cluster.yaml").read_text())
    mappings = cluster["nodes"][0]["extraPortMappings"]
    assert [m["containerPort"] for m in mappings] == [service["spec"]["ports"][0]["nodePort"]]
    assert mappings[0]["listenAddress"] == "127.0.0.1"
    # The homework's autoscaling exercise: a low CPU target so a laptop's load test scales it.
    assert (
        one(manifests, "HorizontalPodAutoscaler", "gateway")["spec"]["metrics"][0]["resource"]["target"][
            "averageUtilization"
        ]
        == 20
    )


def test_eks_puts_the_gateway_behind_a_network_load_balancer() -> None:
    manifests = render("eks")
    service = one(manifests, "Service", "gateway")
    assert service["spec"]["type"] == "LoadBalancer"
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
    for name in WORKLOADS:
        image = _container(manifests, name)["image"]
        assert re.fullmatch(
            r"<account>\.dkr\.ecr\.<region>\.amazonaws\.com/clothing-[a-z]+:[\w.-]+", image
        ), image
    # Only the gateway is public.
    assert [
        s["metadata"]["name"] for s in find(manifests, "Service") if s["spec"].get("type") == "LoadBalancer"
    ] == ["gateway"]


def test_eksctl_config_enables_what_the_manifests_rely_on() -> None:
    cluster = yaml.safe_load((DEPLOY_DIR / "eks/cluster.yaml").read_text())
    assert cluster["apiVersion"] == "eksctl.io/v1alpha5"
    assert cluster["kind"] == "ClusterConfig"
    addons = {addon["name"]: addon for addon in cluster["addons"]}
    assert "metrics-server" in addons  # the HPAs
    assert "enableNetworkPolicy" in addons["vpc-cni"]["configurationValues"]  # the NetworkPolicies
    (group,) = cluster["managedNodeGroups"]
    assert group["minSize"] >= 2  # two TF Serving replicas on different nodes


# What one m5.xlarge offers pods on EKS (the EKS AMI's kubelet reservations for 4 vCPUs and its
# 58-pod limit: CPU 6 % + 1 % + 0.5 % + 0.5 % of the cores = 80m; memory 255Mi + 11Mi per pod =
# 893Mi, plus the 100Mi eviction threshold, from ~15 896Mi the kernel leaves), and what the
# add-ons in deploy/eks/cluster.yaml request: aws-node 25m and kube-proxy 100m on every node,
# CoreDNS 2 x (100m, 70Mi) and metrics-server (100m, 200Mi) once.
M5_XLARGE_ALLOCATABLE = {"cpu": 3920, "memory": 15896 - 893 - 100}  # millicores, MiB
ADDONS_PER_NODE = {"cpu": 25 + 100, "memory": 0}
ADDONS_PER_CLUSTER = {"cpu": 2 * 100 + 100, "memory": 2 * 70 + 200}


def _millicores(quantity: Any) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def test_the_autoscalers_maxima_fit_the_eks_nodes() -> None:
    # Nothing adds nodes on EKS: every pod the HPAs may ask for, plus one surge pod per
    # Deployment during a rollout, must fit the node group's fixed size.
    manifests = render("eks")
    (group,) = yaml.safe_load((DEPLOY_DIR / "eks/cluster.yaml").read_text())["managedNodeGroups"]
    assert group["instanceType"] == "m5.xlarge"
    assert group["minSize"] == group["desiredCapacity"] == group["maxSize"]
    nodes = group["maxSize"]
    need = {"cpu": ADDONS_PER_CLUSTER["cpu"], "memory": ADDONS_PER_CLUSTER["memory"]}
    for name in WORKLOADS:
        hpa = one(manifests, "HorizontalPodAutoscaler", name)
        deployment = one(manifests, "Deployment", name)
        surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        requests = _container(manifests, name)["resources"]["requests"]
        pods = hpa["spec"]["maxReplicas"] + surge
        need["cpu"] += pods * _millicores(requests["cpu"])
        need["memory"] += pods * _bytes(requests["memory"]) // 2**20
    for resource in ("cpu", "memory"):
        offered = nodes * (M5_XLARGE_ALLOCATABLE[resource] - ADDONS_PER_NODE[resource])
        assert need[resource] <= offered, (resource, need, offered)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _bytes(quantity: Any) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)?", str(quantity)).groups()  # type: ignore[union-attr]
    return int(number) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]


def test_deployments_under_an_autoscaler_leave_the_replica_count_to_it(
    overlay: tuple[str, list[Manifest]],
) -> None:
    # A `replicas` in the manifest resets the HPA's count on every `kubectl apply`.
    _, manifests = overlay
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in find(manifests, "HorizontalPodAutoscaler")}
    assert scaled == set(WORKLOADS)
    for name in scaled:
        assert "replicas" not in _deployment(manifests, name)["spec"], name


def test_gateway_disk_holds_every_upload_its_limits_allow(overlay: tuple[str, list[Manifest]]) -> None:
    # Starlette spools a multipart file part over 1 MiB to /tmp, whole: the worst case is every
    # admitted request carrying a full batch of files just under the image limit.
    _, manifests = overlay
    data = one(manifests, "ConfigMap", "gateway-config")["data"]
    settings = parse_settings([], data)
    for name in ("GATEWAY_MAX_CONCURRENCY", "GATEWAY_MAX_BATCH", "GATEWAY_MAX_IMAGE_BYTES"):
        assert name in data, f"{name} sizes the gateway's disk: write it out in gateway-config"
    admission, serving = settings.admission, settings.serving
    uploads = admission.max_concurrency * serving.max_batch * serving.limits.max_bytes
    pod = _deployment(manifests, "gateway")["spec"]["template"]["spec"]
    (tmp,) = (v for v in pod["volumes"] if v["name"] == "tmp")
    size_limit = _bytes(tmp["emptyDir"]["sizeLimit"])
    assert size_limit >= uploads + 128 * 2**20, (size_limit, uploads)
    resources = _container(manifests, "gateway")["resources"]
    # The emptyDir counts against the pod's ephemeral storage: the limit holds it and the logs.
    assert _bytes(resources["limits"]["ephemeral-storage"]) >= size_limit + 256 * 2**20
    request = _bytes(resources["requests"]["ephemeral-storage"])
    assert 0 < request <= _bytes(resources["limits"]["ephemeral-storage"])


def _in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return ip.version == network.version and ip in network


def _egress_allowed(policies: list[Manifest], address: str, pod_in_cluster: bool = False) -> bool:
    """Egress from any pod of the namespace to an address (outside the cluster unless stated)."""
    egress = [p for p in policies if "Egress" in p["spec"].get("policyTypes", [])]
    if not egress:
        return True
    ip = ipaddress.ip_address(address)
    for policy in egress:
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    if _in(ip, block["cidr"]) and not any(_in(ip, e) for e in block.get("except", [])):
                        return True
                elif pod_in_cluster and peer.get("namespaceSelector") == {} and "podSelector" not in peer:
                    return True
    return False


def test_no_pod_reaches_the_instance_metadata_endpoint(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    policies = find(manifests, "NetworkPolicy")
    (deny,) = (p for p in policies if "Egress" in p["spec"].get("policyTypes", []))
    assert deny["spec"]["podSelector"] == {}  # every pod of the namespace
    assert not _egress_allowed(policies, "169.254.169.254")
    assert not _egress_allowed(policies, "fd00:ec2::254")
    # Everything else stays reachable: image hosts, DNS, TF Serving's pods.
    for address in ("93.184.215.14", "10.100.0.10", "2606:4700::1111", "169.254.169.253"):
        assert _egress_allowed(policies, address), address
    assert _egress_allowed(policies, "192.168.3.7", pod_in_cluster=True)


def _ingress_admitted(
    policies: list[Manifest], target: dict[str, str], namespace: str, labels: dict[str, str], port: int
) -> bool:
    """Whether a pod with `labels` in `namespace` may open `port` on a pod labelled `target`."""
    for policy in policies:
        if "Ingress" not in policy["spec"].get("policyTypes", []):
            continue
        if not _selects(policy["spec"]["podSelector"].get("matchLabels", {}), target):
            continue
        for rule in policy["spec"].get("ingress", []):
            if not any(p.get("port") == port for p in rule.get("ports", [])):
                continue
            if "from" not in rule:
                return True  # from anywhere
            for peer in rule["from"]:
                ns = peer.get("namespaceSelector")
                ns_ok = (
                    namespace == "clothing"
                    if ns is None
                    else _selects(ns.get("matchLabels", {}), {"kubernetes.io/metadata.name": namespace})
                )
                if ns_ok and _selects(peer.get("podSelector", {}).get("matchLabels", {}), labels):
                    return True
    return False


PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}


def test_prometheus_may_scrape_tf_serving_metrics_and_nothing_else(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, manifests = overlay
    policies = find(manifests, "NetworkPolicy")
    tf_serving = _deployment(manifests, "tf-serving")["spec"]["template"]["metadata"]["labels"]
    prometheus = PROMETHEUS

    def admitted(namespace: str, labels: dict[str, str], port: int) -> bool:
        return _ingress_admitted(policies, tf_serving, namespace, labels, port)

    # The monitoring port: TF Serving's REST port serves /monitoring/prometheus/metrics.
    monitoring = (DEPLOY_DIR / "images/model/monitoring.config").read_text()
    annotations = _deployment(manifests, "tf-serving")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8501"
    assert f'path: "{annotations["prometheus.io/path"]}"' in monitoring
    assert admitted("monitoring", prometheus, 8501)
    assert not admitted("monitoring", prometheus, 8500)
    assert not admitted("monitoring", {"app.kubernetes.io/name": "grafana"}, 8501)
    assert not admitted("default", prometheus, 8501)


def test_gateway_metrics_are_on_a_port_only_prometheus_reaches(overlay: tuple[str, list[Manifest]]) -> None:
    # On EKS the gateway Service is the public NLB: /metrics must not be behind it.
    _, manifests = overlay
    data = one(manifests, "ConfigMap", "gateway-config")["data"]
    metrics_port = int(data["GATEWAY_METRICS_PORT"])
    assert metrics_port != int(data["GATEWAY_PORT"])
    assert parse_settings([], data).listener.metrics_port == metrics_port
    ports = {p["name"]: p["containerPort"] for p in _container(manifests, "gateway")["ports"]}
    assert ports == {"http": int(data["GATEWAY_PORT"]), "metrics": metrics_port}
    for service in find(manifests, "Service"):
        if service["spec"]["selector"].get("app.kubernetes.io/name") == "gateway":
            name = service["metadata"]["name"]
            assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"], name
    annotations = _deployment(manifests, "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    policies = find(manifests, "NetworkPolicy")
    gateway = _deployment(manifests, "gateway")["spec"]["template"]["metadata"]["labels"]
    assert _ingress_admitted(policies, gateway, "monitoring", PROMETHEUS, metrics_port)
    other_pod = {"app.kubernetes.io/name": "tf-serving"}
    assert not _ingress_admitted(policies, gateway, "clothing", other_pod, metrics_port)
    assert not _ingress_admitted(policies, gateway, "default", PROMETHEUS, metrics_port)
    # The public port stays open to everyone (the load balancer's health checks and clients).
    assert _ingress_admitted(policies, gateway, "default", {}, int(data["GATEWAY_PORT"]))


# eksctl's rules for the ClusterConfig fields deploy/eks/cluster.yaml uses. eksctl publishes its
# JSON schema only inside its Go module (nothing on PyPI), so the structure is checked here.
CALENDAR_CHECKED = date(2026, 12, 6)
EKS_STANDARD_SUPPORT_ENDS = {
    # AWS's "Amazon EKS Kubernetes release calendar", as read on CALENDAR_CHECKED.
    "1.34": date(2026, 12, 2),
    "1.35": date(2027, 3, 27),
}
_NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]*")
_CLUSTER_FIELDS = {"apiVersion", "kind", "metadata", "iam", "addons", "managedNodeGroups"}
_NODE_GROUP_FIELDS = {
    "name": str,
    "instanceType": str,
    "minSize": int,
    "desiredCapacity": int,
    "maxSize": int,
    "volumeSize": int,
    "privateNetworking": bool,
    "labels": dict,
}


def _eksctl_problems(cluster: dict[str, Any]) -> list[str]:
    problems = []
    if cluster.get("apiVersion") != "eksctl.io/v1alpha5" or cluster.get("kind") != "ClusterConfig":
        problems.append("not an eksctl.io/v1alpha5 ClusterConfig")
    problems += [f"unknown field {f}" for f in set(cluster) - _CLUSTER_FIELDS]
    meta = cluster.get("metadata", {})
    if set(meta) - {"name", "region", "version", "tags"}:
        problems.append(f"unknown metadata fields {set(meta) - {'name', 'region', 'version', 'tags'}}")
    if not (isinstance(meta.get("name"), str) and _NAME.fullmatch(meta["name"]) and len(meta["name"]) <= 100):
        problems.append("metadata.name must match [a-zA-Z][-a-zA-Z0-9]*")
    if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", str(meta.get("region", ""))):
        problems.append("metadata.region is not an AWS region")
    if not (isinstance(meta.get("version"), str) and re.fullmatch(r"1\.\d+", meta["version"])):
        problems.append('metadata.version must be a string "1.N"')
    if not isinstance(cluster.get("iam", {}).get("withOIDC", False), bool):
        problems.append("iam.withOIDC must be a boolean")
    for addon in cluster.get("addons", []):
        if set(addon) - {"name", "version", "configurationValues"} or not isinstance(addon.get("name"), str):
            problems.append(f"addon {addon}: only name, version, configurationValues")
        if "configurationValues" in addon:
            try:
                json.loads(addon["configurationValues"])
            except (TypeError, ValueError):
                problems.append(f"addon {addon['name']}: configurationValues is not JSON")
    for group in cluster.get("managedNodeGroups", []):
        for field, value in group.items():
            expected = _NODE_GROUP_FIELDS.get(field)
            if expected is None:
                problems.append(f"node group field {field} is not checked here")
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                problems.append(f"node group {field} must be {expected.__name__}")
        if not _NAME.fullmatch(str(group.get("name", ""))):
            problems.append("node group name must match [a-zA-Z][-a-zA-Z0-9]*")
        if not group.get("minSize", 0) <= group.get("desiredCapacity", 0) <= group.get("maxSize", 0):
            problems.append("node group sizes must satisfy minSize <= desiredCapacity <= maxSize")
        for key in group.get("labels", {}):
            # eksctl (validation.go, managed node groups) and the kubelet refuse node labels in
            # the kubernetes.io and k8s.io domains and their subdomains.
            domain = key.rpartition("/")[0]
            if domain in ("kubernetes.io", "k8s.io") or domain.endswith((".kubernetes.io", ".k8s.io")):
                problems.append(f"node label {key}: kubernetes.io and k8s.io domains are reserved")
    return problems


def test_eksctl_accepts_the_cluster_config() -> None:
    cluster = yaml.safe_load((DEPLOY_DIR / "eks/cluster.yaml").read_text())
    assert _eksctl_problems(cluster) == []


def test_the_eksctl_check_refuses_what_eksctl_refuses() -> None:
    cluster = yaml.safe_load((DEPLOY_DIR / "eks/cluster.yaml").read_text())
    group = cluster["managedNodeGroups"][0]
    for label in ("app.kubernetes.io/part-of", "kubernetes.io/role", "node.k8s.io/pool"):
        group["labels"] = {label: "x"}
        assert any("reserved" in p for p in _eksctl_problems(cluster)), label
    group["labels"] = {}
    group["maxSize"] = 1
    cluster["metadata"]["version"] = 1.35
    problems = _eksctl_problems(cluster)
    assert any("minSize <= desiredCapacity" in p for p in problems)
    assert any("metadata.version" in p for p in problems)


def test_eks_runs_a_kubernetes_version_in_standard_support() -> None:
    # Past the end of standard support a cluster pays extended-support pricing.
    version = yaml.safe_load((DEPLOY_DIR / "eks/cluster.yaml").read_text())["metadata"]["version"]
    assert version in EKS_STANDARD_SUPPORT_ENDS, f"add {version}'s dates from the EKS release calendar"
    # Against the day the calendar was read, not today: a test must not start failing on a date
    # with no change to the repository. The chosen version had months of standard support left.
    assert EKS_STANDARD_SUPPORT_ENDS[version] >= CALENDAR_CHECKED + timedelta(days=90), (
        f"EKS {version} leaves standard support within three months of {CALENDAR_CHECKED}"
    )
    # eks.sh requires an eksctl that knows it; the docs state the same minimum.
    script = (DEPLOY_DIR / "eks/eks.sh").read_text()
    minimum = re.search(r"^EKSCTL_MINIMUM=(\S+)", script, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert f"eksctl >= {minimum}" in (DEPLOY_DIR.parent / "docs/deploy.md").read_text()


def test_kind_pins_a_node_image_new_enough_for_the_manifests() -> None:
    cluster = yaml.safe_load((DEPLOY_DIR / "kind/cluster.yaml").read_text())
    for node in cluster["nodes"]:
        # The digest: a kindest/node tag can point at builds for other kind releases.
        match = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", node["image"])
        assert match, node["image"]
        assert int(match.group(1)) >= 30  # preStop.sleep


def test_the_schemas_are_those_of_the_clusters_kubernetes() -> None:
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert yaml.safe_load((DEPLOY_DIR / "eks/cluster.yaml").read_text())["metadata"]["version"] == minor
    for node in yaml.safe_load((DEPLOY_DIR / "kind/cluster.yaml").read_text())["nodes"]:
        assert node["image"].startswith(f"kindest/node:v{minor}."), node["image"]
