#!/usr/bin/env bash
# The EKS workflow: cluster, ECR repositories, images pushed, overlay applied, public URL.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CLUSTER=clothing   # metadata.name in deploy/eks/cluster.yaml
PLACEHOLDER='<account>.dkr.ecr.<region>.amazonaws.com'   # the registry deploy/eks names
# eksctl refuses Kubernetes versions newer than it knows: 0.222.0 (2026-02-06) is the first release
# after EKS added 1.35 (2026-01-27), the version deploy/eks/cluster.yaml asks for.
EKSCTL_MINIMUM=0.222.0

usage() {
  cat <<USAGE
usage: ${PROG} [--dry-run] [--region REGION] [--tag TAG] [--model PATH [--labels FILE]
              [--family NAME] [--target-size HxW]] [--model-version N] [--canary-model PATH] COMMAND

  up      build both images with pants, create the EKS cluster "${CLUSTER}" from
          deploy/eks/cluster.yaml (if absent) and the ECR repositories (if absent), push the
          images, apply deploy/eks, wait for the rollouts and print the load balancer's URL
  url     print the load balancer's URL
  down    delete the workloads (so the load balancer is released), then the cluster; the ECR
          repositories and their images are kept

  canary PERCENT  load version N+1 (baked with --canary-model) beside N, label it canary and send
                  PERCENT (1-100) of the gateway's requests to it
  promote         label N+1 stable too, unload N, end the split
  rollback        label N canary again, unload N+1, end the split
                  (these three change TF Serving's model config without a restart and the
                  gateway's GATEWAY_CANARY_PERCENT with a rolling restart; no image is built)

  --dry-run        print the commands instead of running them (prerequisites are only reported)
  --region REGION  AWS region (default: \$AWS_REGION, else eu-west-1)
  --tag TAG        image tag (default: the git revision; with uncommitted changes
                   <revision>-dirty-<hash of the changes>; with --model, -model-<hash>
                   added)
${MODEL_USAGE}

Prerequisites (checked first): aws (CLI v2, logged in), eksctl >= ${EKSCTL_MINIMUM},
kubectl >= ${KUBECTL_MINIMUM}; for up also docker, and for building on this host python3 >= 3.10.
kubectl commands use the context eks-${CLUSTER}-<region>, which every command (re)writes
into the kubeconfig with aws eks update-kubeconfig --alias.
Images are built on this host on Linux x86_64, elsewhere (macOS, Windows, arm64) in the builder
container, deploy/builder (CLOTHING_BUILDER=always|never forces the choice).
USAGE
}

region="${AWS_REGION:-eu-west-1}"
tag=""
command=""
percent=""
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --region) region="${2:?--region needs a value}"; shift ;;
    --tag) tag="${2:?--tag needs a value}"; shift ;;
    --model|--labels|--family|--target-size|--model-version|--canary-model) model_option "$1" "${2:-}"; shift ;;
    up|down|url|promote|rollback) command="$1" ;;
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
# Every kubectl command names this context: never whatever the kubeconfig's current one is.
CONTEXT="eks-${CLUSTER}-${region}"

prereq_version aws 2.0 "AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html" \
  aws --version
prereq_version eksctl "${EKSCTL_MINIMUM}" "https://eksctl.io/installation/" eksctl version
prereq_version kubectl "${KUBECTL_MINIMUM}" "https://kubernetes.io/docs/tasks/tools/" kubectl version --client
if [[ "${command}" == up ]]; then prereq_builds; fi
prereqs_checked
# A model file that cannot be used stops `up` here, before the cluster or any image.
if [[ "${command}" == up ]]; then
  model_checked
  [[ -n "${tag_given}" ]] || tag="$(with_model_tag "${tag}")"
fi

# cluster.yaml with the chosen region (the checked-in file names a default one).
cluster_config="$(mktemp)"
overlay="$(mktemp -d)"
# A dry run keeps them, to be looked at or used by hand.
(( DRY_RUN )) || trap 'rm -rf "${cluster_config}" "${overlay}"' EXIT
sed "s/^  region: .*/  region: ${region}/" "${DEPLOY_DIR}/eks/cluster.yaml" > "${cluster_config}"

registry() {
  local account="<account>"
  if (( ! DRY_RUN )); then
    account="$(aws sts get-caller-identity --query Account --output text)"
  fi
  printf '%s.dkr.ecr.%s.amazonaws.com\n' "${account}" "${region}"
}

# The cluster's credentials under the context name this script uses (idempotent).
# Its message goes to stderr: `url` prints only the URL on stdout.
kubeconfig() {
  if (( DRY_RUN )); then
    run aws eks update-kubeconfig --name "${CLUSTER}" --region "${region}" --alias "${CONTEXT}"
  else
    run aws eks update-kubeconfig --name "${CLUSTER}" --region "${region}" --alias "${CONTEXT}" >&2
  fi
}

url() {
  local host="" attempt
  for attempt in $(seq 1 60); do
    if (( DRY_RUN )); then
      run kubectl --context "${CONTEXT}" -n clothing get service gateway -o 'jsonpath={.status.loadBalancer.ingress[0].hostname}'
      host="<load balancer hostname>"
      break
    fi
    host="$(kubectl --context "${CONTEXT}" -n clothing get service gateway -o 'jsonpath={.status.loadBalancer.ingress[0].hostname}')"
    [[ -n "${host}" ]] && break
    log "waiting for the load balancer (${attempt}/60)"
    sleep 10
  done
  [[ -n "${host}" ]] || die "the gateway Service got no load balancer within 10 minutes (kubectl --context ${CONTEXT} -n clothing describe service gateway)"
  printf 'http://%s\n' "${host}"
}

case "${command}" in
  up)
    # The images first: a model file the export refuses, or a broken build, stops `up` before
    # anything is created in the AWS account.
    registry="$(registry)"
    log "[1/7] building ${registry}/clothing-gateway:${tag} and clothing-model:${tag} (model: ${MODEL_PATH:-the demo model})"
    export IMAGE_TAG="${tag}"
    # Pants tags the images for the registry given here.
    build_images --no-dynamic-ui "--docker-registries={'ecr': {'address': '${registry}', 'default': True}}"

    log "[2/7] cluster ${CLUSTER} in ${region} (eksctl takes about 15 minutes for a new one)"
    if (( DRY_RUN )) || ! eksctl get cluster --name "${CLUSTER}" --region "${region}" >/dev/null 2>&1; then
      run eksctl create cluster -f "${cluster_config}"
    else
      log "cluster ${CLUSTER} exists"
    fi
    kubeconfig

    log "[3/7] ECR repositories in ${registry}"
    for image in "${IMAGES[@]}"; do
      run_sh "aws ecr describe-repositories --region ${region} --repository-names ${image} >/dev/null 2>&1 || aws ecr create-repository --region ${region} --repository-name ${image} --image-scanning-configuration scanOnPush=true"
    done

    log "[4/7] docker login to ECR"
    run_sh "aws ecr get-login-password --region ${region} | docker login --username AWS --password-stdin ${registry}"

    log "[5/7] pushing the images"
    # This host's docker, with the user's PATH: a credential helper the login stored the token
    # in (credsStore/credHelpers in the Docker config) is found, wherever the images were built.
    for image in "${IMAGES[@]}"; do run docker push "${registry}/${image}:${tag}"; done

    log "[6/7] applying deploy/eks"
    write_overlay "${overlay}" eks "${registry}" "${tag}" "${PLACEHOLDER}"
    run kubectl --context "${CONTEXT}" apply -k "${overlay}"
    run kubectl --context "${CONTEXT}" -n clothing rollout status deployment/tf-serving --timeout=600s
    run kubectl --context "${CONTEXT}" -n clothing rollout status deployment/gateway --timeout=300s

    log "[7/7] the gateway's public URL (DNS may take a few more minutes to resolve)"
    url
    ;;
  url)
    kubeconfig
    url
    ;;
  down)
    # The Service's load balancer is deleted with the Service; eksctl would otherwise leave it
    # (and the VPC it lives in) behind.
    kubeconfig
    write_overlay "${overlay}" eks "$(registry)" "${tag}" "${PLACEHOLDER}"
    run kubectl --context "${CONTEXT}" delete -k "${overlay}" --ignore-not-found --wait=true
    run eksctl delete cluster -f "${cluster_config}" --wait
    log "kept: the ECR repositories clothing-gateway and clothing-model (aws ecr delete-repository --force ... to remove them)"
    ;;
  canary|promote|rollback)
    kubeconfig
    rollout "${command}" "${percent}"
    ;;
esac
