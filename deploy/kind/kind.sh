#!/usr/bin/env bash
# The kind workflow: a local cluster running the images built here, with autoscaling.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CLUSTER=clothing
CONTEXT="kind-${CLUSTER}"   # the kube context kind creates; every kubectl command names it
# NetworkPolicy is enforced from kind v0.24.0; deploy/kind/cluster.yaml pins the node image
# kind v0.33.0 was released with.
KIND_MINIMUM=0.33.0
URL=http://127.0.0.1:8080   # deploy/kind/cluster.yaml maps the gateway's NodePort here
METRICS_SERVER=https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.7.2/components.yaml
METRICS_SERVER_ARGS_PATCH='[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["--cert-dir=/tmp","--secure-port=10250","--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname","--kubelet-use-node-status-port","--metric-resolution=15s","--kubelet-insecure-tls"]}]'

usage() {
  cat <<USAGE
usage: ${PROG} [--dry-run] [--tag TAG] [--model PATH [--labels FILE] [--family NAME]
               [--target-size HxW]] [--model-version N] [--canary-model PATH] COMMAND

  up      build both images with pants, create the kind cluster "${CLUSTER}" (if absent), load the
          images into it, install metrics-server, apply deploy/kind, wait for the rollouts and
          smoke-test the gateway at ${URL}; version N serves, labelled stable and canary
  smoke   only the smoke test against ${URL}
  down    delete the cluster

  canary PERCENT  load version N+1 (baked with --canary-model) beside N, label it canary and send
                  PERCENT (1-100) of the gateway's requests to it
  promote         label N+1 stable too, unload N, end the split
  rollback        label N canary again, unload N+1, end the split
                  (these three change TF Serving's model config without a restart and the
                  gateway's GATEWAY_CANARY_PERCENT with a rolling restart; no image is built)

  --dry-run   print the commands instead of running them (prerequisites are only reported)
  --tag TAG   image tag (default: the git revision; with uncommitted changes
              <revision>-dirty-<hash of the changes>; with --model, -model-<hash> added)
${MODEL_USAGE}

Prerequisites (checked first): docker, kind >= v${KIND_MINIMUM}, kubectl >= ${KUBECTL_MINIMUM}, curl,
and for building on this host python3 >= 3.10. kubectl commands use the context ${CONTEXT}.
Then: ./pants loadtest -- --url ${URL} drives the HPA.
Images are built on this host on Linux x86_64, elsewhere (macOS, Windows, arm64) in the builder
container, deploy/builder (CLOTHING_BUILDER=always|never forces the choice).
USAGE
}

tag=""
command=""
percent=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --tag) tag="${2:?--tag needs a value}"; shift ;;
    --model|--labels|--family|--target-size|--model-version|--canary-model) model_option "$1" "${2:-}"; shift ;;
    up|down|smoke|promote|rollback) command="$1" ;;
    canary) command="$1"; percent="${2:-}"; [[ $# -lt 2 ]] || shift ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ -n "${command}" ]] || { usage >&2; exit 2; }
tag_given="${tag}"
tag="${tag:-$(default_tag)}"
# Pants takes paths relative to the repository.
cd "${REPO_ROOT}"

smoke() {
  log "smoke test: ${URL}/readyz"
  run curl --fail --silent --show-error --retry 10 --retry-delay 3 --retry-all-errors "${URL}/readyz"
  run curl --fail --silent --show-error "${URL}/healthz"
}

case "${command}" in
  up)
    prereq_builds
    prereq_version kind "${KIND_MINIMUM}" "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" kind version
    prereq_version kubectl "${KUBECTL_MINIMUM}" "https://kubernetes.io/docs/tasks/tools/" kubectl version --client
    prereq curl "your distribution's curl package" || true
    prereqs_checked
    model_checked
    [[ -n "${tag_given}" ]] || tag="$(with_model_tag "${tag}")"
    log "[1/6] building clothing-gateway:${tag} and clothing-model:${tag} (model: ${MODEL_PATH:-the demo model})"
    export IMAGE_TAG="${tag}"
    build_images --no-dynamic-ui

    log "[2/6] cluster ${CLUSTER}"
    if (( DRY_RUN )) || ! kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
      run kind create cluster --name "${CLUSTER}" --config "${DEPLOY_DIR}/kind/cluster.yaml" --wait 120s
    else
      log "cluster ${CLUSTER} exists"
    fi

    log "[3/6] loading the images into the nodes"
    run kind load docker-image --name "${CLUSTER}" "clothing-gateway:${tag}" "clothing-model:${tag}"

    log "[4/6] metrics-server (the HPAs read CPU usage from it)"
    run kubectl --context "${CONTEXT}" apply -f "${METRICS_SERVER}"
    # kind's kubelets serve self-signed certificates. The whole argument list (v0.7.2's own plus
    # --kubelet-insecure-tls) is replaced, not appended to, so a second `up` changes nothing.
    run kubectl --context "${CONTEXT}" -n kube-system patch deployment metrics-server --type=json \
      -p "${METRICS_SERVER_ARGS_PATCH}"

    log "[5/6] applying deploy/kind"
    overlay="$(mktemp -d)"
    # A dry run keeps it, to be looked at or applied by hand.
    (( DRY_RUN )) || trap 'rm -rf "${overlay}"' EXIT
    write_overlay "${overlay}" kind "" "${tag}"
    run kubectl --context "${CONTEXT}" apply -k "${overlay}"
    run kubectl --context "${CONTEXT}" -n clothing rollout status deployment/tf-serving --timeout=300s
    run kubectl --context "${CONTEXT}" -n clothing rollout status deployment/gateway --timeout=180s

    log "[6/6] smoke test"
    smoke
    log "up: ${URL} (./pants loadtest -- --url ${URL} to watch the HPA: kubectl --context ${CONTEXT} -n clothing get hpa -w)"
    ;;
  smoke)
    require curl "your distribution's curl package"
    smoke
    ;;
  down)
    require kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    run kind delete cluster --name "${CLUSTER}"
    ;;
  canary|promote|rollback)
    require kubectl "https://kubernetes.io/docs/tasks/tools/"
    rollout "${command}" "${percent}"
    ;;
esac
