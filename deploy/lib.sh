# Shared by deploy/kind/kind.sh and deploy/eks/eks.sh (sourced, not run).
# shellcheck shell=bash

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${DEPLOY_DIR}/.." && pwd)"
PROG="$(basename "$0")"
DRY_RUN=0
IMAGES=(clothing-gateway clothing-model)

log() { printf '%s: %s\n' "${PROG}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a command, or with --dry-run prints it (shell-quoted, so it can be pasted) instead.
run() {
  if (( DRY_RUN )); then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    log "running: $*"
    "$@"
  fi
}

# Same for a pipeline or anything else that needs a shell, given as one string.
run_sh() {
  if (( DRY_RUN )); then
    printf '+ %s\n' "$1"
  else
    log "running: $1"
    bash -o pipefail -c "$1"
  fi
}

# Prerequisites, all checked before a script's first step: `prereq` and `prereq_version` record
# what is missing or too old (one line each, with how to get it), `prereqs_checked` then stops the
# script (exit 2) if anything was. With --dry-run the problems are only reported.
PREREQ_PROBLEMS=0

# prereq TOOL HINT
prereq() {
  if ! command -v "$1" >/dev/null 2>&1; then
    log "missing prerequisite: $1 ($2)"
    PREREQ_PROBLEMS=1
    return 1
  fi
}

# version_at_least VERSION MINIMUM: dotted numeric versions, a leading "v" ignored.
version_at_least() {
  local IFS=. i
  local -a have want
  read -r -a have <<<"${1#v}"
  read -r -a want <<<"${2#v}"
  for (( i = 0; i < ${#want[@]}; i++ )); do
    if (( 10#${have[i]:-0} > 10#${want[i]} )); then return 0; fi
    if (( 10#${have[i]:-0} < 10#${want[i]} )); then return 1; fi
  done
  return 0
}

# prereq_version TOOL MINIMUM HINT COMMAND...: TOOL present and COMMAND's output (its first
# dotted version number) at least MINIMUM.
prereq_version() {
  local tool="$1" minimum="$2" hint="$3" output version
  shift 3
  prereq "${tool}" "${hint}" || return 0
  output="$("$@" 2>&1)" || true
  version="$(grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)?' <<<"${output}" | head -n 1)" || true
  if [[ -z "${version}" ]]; then
    log "prerequisite ${tool}: cannot tell its version from \`$*\` (need >= ${minimum}; ${hint})"
    PREREQ_PROBLEMS=1
  elif ! version_at_least "${version}" "${minimum}"; then
    log "prerequisite ${tool} ${version} is too old: need >= ${minimum} (${hint})"
    PREREQ_PROBLEMS=1
  fi
}

prereqs_checked() {
  if (( PREREQ_PROBLEMS )); then
    if (( DRY_RUN )); then
      log "continuing the dry run without them"
    else
      exit 2
    fi
  fi
}

# require TOOL HINT...: prereq for each, then prereqs_checked.
require() {
  while (( $# )); do
    prereq "$1" "$2" || true
    shift 2
  done
  prereqs_checked
}

# shellcheck disable=SC2034  # used by kind.sh and eks.sh
KUBECTL_MINIMUM=1.34   # kubectl within one minor version of the clusters' Kubernetes 1.35

# What building the images needs: Docker, and when they are built on this host (not in the
# builder) a Python 3.10+ for the ./pants launcher's bootstrap (docs/bootstrap.md; the launcher
# finds the rest itself, or says what is missing).
prereq_builds() {
  prereq docker "a Docker engine: https://docs.docker.com/engine/install/" || true
  if ! use_builder && [[ -z "${CLOTHING_TOOLS_PYTHON:-}" ]]; then
    prereq_version python3 3.10 "for ./pants: Python 3.11 (pyenv, uv or your package manager), or CLOTHING_BUILDER=always" \
      python3 --version
  fi
}

# The images' tag: the git revision, and for a tree with uncommitted changes "-dirty-" and a hash
# of those changes (tracked diffs and untracked files), so every different build gets its own tag
# and a re-apply rolls the pods (IfNotPresent would keep an old image under a reused tag).
# "dev" outside a git checkout.
default_tag() {
  local rev changes
  if rev="$(git -C "${REPO_ROOT}" rev-parse --short=12 HEAD 2>/dev/null)"; then
    if [[ -n "$(git -C "${REPO_ROOT}" status --porcelain 2>/dev/null)" ]]; then
      changes="$(
        cd "${REPO_ROOT}" || exit 1
        {
          git diff HEAD --binary --no-color --no-ext-diff
          git ls-files --others --exclude-standard -z |
            while IFS= read -r -d '' file; do
              printf '%s %s\n' "$(git hash-object -- "${file}")" "${file}"
            done
        } | git hash-object --stdin
      )"
      rev="${rev}-dirty-${changes:0:12}"
    fi
    printf '%s\n' "${rev}"
  else
    printf 'dev\n'
  fi
}

# relative_from DIR PATH: PATH (absolute) as seen from DIR. Kustomize refuses absolute paths.
relative_from() {
  local dir up="" rest
  dir="$(cd "$1" && pwd -P)"
  rest="$(cd "$2" && pwd -P)"
  while [[ "${dir}" != "/" ]]; do
    up="${up}../"
    dir="$(dirname "${dir}")"
  done
  printf '%s%s\n' "${up}" "${rest#/}"
}

# write_overlay DIR OVERLAY REGISTRY TAG [PLACEHOLDER]: a kustomization in DIR that applies
# deploy/OVERLAY with the images this run built, so the checked-in overlays never need editing.
# REGISTRY may be empty (kind: images are loaded into the nodes under their plain names).
# PLACEHOLDER is the registry the overlay itself names (kustomize matches images by the name the
# overlay renders, not by the base's).
write_overlay() {
  local dir="$1" overlay="$2" registry="$3" tag="$4" placeholder="${5:-}" image
  {
    printf '# Generated by %s: deploy/%s with the images tagged %s.\n' "${PROG}" "${overlay}" "${tag}"
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
    printf 'resources:\n  - %s\n' "$(relative_from "${dir}" "${DEPLOY_DIR}/${overlay}")"
    printf 'images:\n'
    for image in "${IMAGES[@]}"; do
      printf '  - name: %s\n' "${placeholder:+${placeholder}/}${image}"
      if [[ -n "${registry}" ]]; then
        printf '    newName: %s/%s\n' "${registry}" "${image}"
      fi
      printf '    newTag: "%s"\n' "${tag}"
    done
    # The model image's version (--model-version) served and labelled, the canary not yet loaded.
    printf 'configMapGenerator:\n  - name: tf-serving-models\n    behavior: replace\n'
    printf '    files:\n      - models.config\n    options:\n      disableNameSuffixHash: true\n'
  } > "${dir}/kustomization.yaml"
  model_config "${MODEL_VERSION:-1}" "${MODEL_VERSION:-1}" "${MODEL_VERSION:-1}" > "${dir}/models.config"
  if (( DRY_RUN )); then
    printf '# %s/kustomization.yaml:\n' "${dir}"
    sed 's/^/#   /' "${dir}/kustomization.yaml"
    printf '# %s/models.config:\n' "${dir}"
    sed 's/^/#   /' "${dir}/models.config"
  fi
}

# The host's CA bundle, so the builder trusts what the host trusts (a TLS-inspecting proxy too).
host_ca_bundle() {
  local candidate
  for candidate in "${CLOTHING_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt \
    /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    if [[ -n "${candidate}" && -f "${candidate}" ]]; then
      printf '%s\n' "${candidate}"
      return 0
    fi
  done
  return 1
}

# in_builder ARGS...: `./pants ARGS` inside the builder container (deploy/builder/Dockerfile),
# built first if this version of it is not in the daemon yet.
in_builder() {
  local image socket ca network=() volume="${CLOTHING_BUILDER_VOLUME:-clothing-builder-cache}"
  image="clothing-builder:$(cksum <"${DEPLOY_DIR}/builder/Dockerfile" | cut -d' ' -f1)"
  if [[ -n "${CLOTHING_BUILDER_NETWORK:-}" ]]; then network=(--network "${CLOTHING_BUILDER_NETWORK}"); fi
  if (( DRY_RUN )) || ! docker image inspect "${image}" >/dev/null 2>&1; then
    log "building the builder image ${image}"
    run docker build --platform linux/amd64 "${network[@]}" \
      ${CLOTHING_BUILDER_BASE:+--build-arg "BASE=${CLOTHING_BUILDER_BASE}"} \
      -t "${image}" "${DEPLOY_DIR}/builder"
  fi
  socket=/var/run/docker.sock
  if [[ "${DOCKER_HOST:-}" == unix://* ]]; then socket="${DOCKER_HOST#unix://}"; fi
  local args=(--rm --platform linux/amd64 "${network[@]}"
    -v "${REPO_ROOT}:/src" -v "${volume}:/cache" -v "${socket}:/var/run/docker.sock"
    -e DOCKER_HOST=unix:///var/run/docker.sock -e IMAGE_TAG -e BASE_IMAGE "${MODEL_BUILDER_ARGS[@]}")
  if ca="$(host_ca_bundle)"; then
    args+=(-v "${ca}:/etc/clothing-host-ca.pem:ro" -e CLOTHING_CA_BUNDLE=/etc/clothing-host-ca.pem)
  fi
  # The workdir stays in the volume: the host's own Pants (if any) keeps .pants.d to itself.
  # One builder run at a time per volume: Pants' LMDB store cannot be shared between containers
  # (each has its own PID namespace), so a second run waits on the volume's lock.
  run docker run "${args[@]}" "${image}" \
    flock /cache/builder.lock ./pants --no-pantsd --pants-workdir=/cache/pants.d "$@"
}

# use_builder: true when the images are built in the builder rather than on this host, which
# builds linux/amd64 images itself only on Linux x86_64. CLOTHING_BUILDER=always|never overrides.
use_builder() {
  case "${CLOTHING_BUILDER:-auto}" in
    always) return 0 ;;
    never) return 1 ;;
    auto) [[ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]] ;;
    *) die "CLOTHING_BUILDER must be auto, always or never, not ${CLOTHING_BUILDER}" ;;
  esac
}

# pants_for_images ARGS...: `./pants ARGS` for building the images (tagged $IMAGE_TAG), on this
# host or in the builder (use_builder).
pants_for_images() {
  if use_builder; then
    log "building in the builder container (deploy/builder; CLOTHING_BUILDER=never builds on this host)"
    in_builder "$@"
  else
    # The scripts run from the repository's root (Pants takes paths relative to it).
    run env IMAGE_TAG="${IMAGE_TAG:-dev}" "${MODEL_ENV[@]}" ./pants "$@"
  fi
}

# --- The user's own model (--model PATH and the export tool's options) ---------------------------
#
# deploy/images/model/BUILD exports the file named by CLOTHING_MODEL (and the labels, family and
# size options) instead of the demo model; the digests key Pants' cached export, since the file
# lives outside the repository.
MODEL_PATH=""
MODEL_LABELS=""
MODEL_FAMILY=""
MODEL_TARGET_SIZE=""
MODEL_VERSION=""      # --model-version: the baked model's version number (default 1)
CANARY_PATH=""        # --canary-model: a second model baked as the next version
MODEL_DIGEST=""       # a hash of the file, labels and options (model_checked)
MODEL_ENV=()          # VAR=value words for `env` before ./pants on this host
MODEL_BUILDER_ARGS=() # docker run -v/-e arguments for the builder container

# shellcheck disable=SC2034  # used by kind.sh and eks.sh
MODEL_USAGE="  --model PATH        bake this Keras model (.keras, .h5 or a SavedModel directory) into
                      the model image instead of the untrained demo model: exported with the
                      export tool (src/python/export) and verified before any image is built
  --labels FILE       its class labels in output order, a JSON list or one per line
                      (default: the course's ten clothing classes)
  --family NAME       the keras.applications family whose preprocess_input it was trained
                      with, e.g. xception, resnet50 (default: xception)
  --target-size HxW   the image size it was trained on (default: the model's input size)
  --model-version N   the version number the model is baked as (default 1): the version serving
                      now, when the model image is built again for a rollout
  --canary-model PATH a second model baked beside it as version N+1, exported with the same
                      options, for a canary rollout (canary, promote, rollback)"

# model_option OPTION VALUE: records one of the options above (the caller shifts twice).
model_option() {
  [[ -n "$2" ]] || die "$1 needs a value"
  case "$1" in
    --model) MODEL_PATH="$2" ;;
    --labels) MODEL_LABELS="$2" ;;
    --family) MODEL_FAMILY="$2" ;;
    --target-size) MODEL_TARGET_SIZE="$2" ;;
    --model-version) MODEL_VERSION="$2" ;;
    --canary-model) CANARY_PATH="$2" ;;
  esac
}

# digest PATH: a hash of a file's content, or of every file under a directory with its name.
digest() {
  if [[ -d "$1" ]]; then
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64
  else
    sha256sum <"$1" | cut -c1-64
  fi
}

# model_problem PATH: why PATH cannot be a Keras model (empty output when it may be one). Only
# what can be told without TensorFlow; the export tool, run next, loads it and says the rest.
model_problem() {
  local path="$1" magic
  if [[ ! -e "${path}" ]]; then
    echo "no such file or directory"
  elif [[ -d "${path}" ]]; then
    if [[ ! -r "${path}" || ! -x "${path}" ]]; then
      echo "cannot read the directory (permission denied)"
    elif [[ ! -f "${path}/saved_model.pb" ]]; then
      echo "a directory without saved_model.pb, so not a SavedModel (give a .keras or .h5 file, or a SavedModel directory)"
    fi
  elif [[ ! -f "${path}" ]]; then
    echo "not a regular file"
  elif [[ ! -r "${path}" ]]; then
    echo "cannot read the file (permission denied)"
  else
    magic="$(head -c 8 "${path}" | od -An -tx1 | tr -d ' \n')"
    case "${path,,}" in
      *.h5|*.hdf5)
        [[ "${magic}" == 894844460d0a1a0a ]] || echo "not an HDF5 file, so not a Keras .h5 model" ;;
      *.keras)
        [[ "${magic:0:8}" == 504b0304 ]] || echo "not a zip archive, so not a .keras model" ;;
      *) echo "not a Keras model file (expected .keras, .h5 or a SavedModel directory)" ;;
    esac
  fi
}

# bake_model FLAG PATH VARIABLE MOUNT: check a model file given as FLAG, then hand it to the image
# build as VARIABLE (its path) and VARIABLE_SHA256, read once, and to the builder container through a
# read-only mount of its own under MOUNT.
bake_model() {
  local flag="$1" path="$2" variable="$3" mount="$4" problem absolute sha
  problem="$(model_problem "${path}")"
  [[ -z "${problem}" ]] || die "${flag} ${path}: ${problem}"
  absolute="$(cd "$(dirname "${path}")" && pwd -P)/$(basename "${path}")"
  sha="$(digest "${absolute}")"
  MODEL_ENV+=("${variable}=${absolute}" "${variable}_SHA256=${sha}")
  MODEL_BUILDER_ARGS+=(-v "${absolute}:${mount}/$(basename "${absolute}"):ro"
    -e "${variable}=${mount}/$(basename "${absolute}")" -e "${variable}_SHA256=${sha}")
}

# model_checked: stops the script (one line naming the file and the problem) when --model or
# --labels cannot be used, and prepares what the image build passes on. Runs before any build.
model_checked() {
  local problem absolute mount=/clothing-model-input
  MODEL_ENV=()
  MODEL_BUILDER_ARGS=()
  if [[ -n "${MODEL_VERSION}" ]]; then
    # TF Serving's versions are int64; the canary takes the next number.
    [[ "${MODEL_VERSION}" =~ ^[0-9]{1,18}$ ]] ||
      die "--model-version ${MODEL_VERSION}: expected a version number (a whole number, 0 or more)"
    MODEL_VERSION="$((10#${MODEL_VERSION}))"
    MODEL_ENV+=("CLOTHING_MODEL_VERSION=${MODEL_VERSION}")
    MODEL_BUILDER_ARGS+=(-e "CLOTHING_MODEL_VERSION=${MODEL_VERSION}")
  fi
  if [[ -z "${MODEL_PATH}${CANARY_PATH}" ]]; then
    [[ -z "${MODEL_LABELS}${MODEL_FAMILY}${MODEL_TARGET_SIZE}" ]] ||
      die "--labels, --family and --target-size describe the file given with --model PATH"
    model_digest
    return 0
  fi
  if [[ -n "${MODEL_TARGET_SIZE}" && ! "${MODEL_TARGET_SIZE}" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]]; then
    die "--target-size ${MODEL_TARGET_SIZE}: expected HxW, e.g. 299x299"
  fi
  [[ -z "${MODEL_PATH}" ]] || bake_model --model "${MODEL_PATH}" CLOTHING_MODEL "${mount}"
  [[ -z "${CANARY_PATH}" ]] || bake_model --canary-model "${CANARY_PATH}" CLOTHING_CANARY_MODEL "${mount}-canary"
  if [[ -n "${MODEL_LABELS}" ]]; then
    [[ -f "${MODEL_LABELS}" && -r "${MODEL_LABELS}" ]] ||
      die "--labels ${MODEL_LABELS}: no such file, or it cannot be read"
    absolute="$(cd "$(dirname "${MODEL_LABELS}")" && pwd -P)/$(basename "${MODEL_LABELS}")"
    MODEL_ENV+=("CLOTHING_MODEL_LABELS=${absolute}" "CLOTHING_MODEL_LABELS_SHA256=$(digest "${absolute}")")
    MODEL_BUILDER_ARGS+=(-v "${absolute}:${mount}-labels/$(basename "${absolute}"):ro"
      -e "CLOTHING_MODEL_LABELS=${mount}-labels/$(basename "${absolute}")"
      -e "CLOTHING_MODEL_LABELS_SHA256=$(digest "${absolute}")")
  fi
  if [[ -n "${MODEL_FAMILY}" ]]; then
    MODEL_ENV+=("CLOTHING_MODEL_FAMILY=${MODEL_FAMILY}")
    MODEL_BUILDER_ARGS+=(-e "CLOTHING_MODEL_FAMILY=${MODEL_FAMILY}")
  fi
  if [[ -n "${MODEL_TARGET_SIZE}" ]]; then
    MODEL_ENV+=("CLOTHING_MODEL_TARGET_SIZE=${MODEL_TARGET_SIZE}")
    MODEL_BUILDER_ARGS+=(-e "CLOTHING_MODEL_TARGET_SIZE=${MODEL_TARGET_SIZE}")
  fi
  model_digest
}

# Everything that changes the exports, for the image tag: another model (or the same one with
# other labels, another version number or a canary) must not reuse a tag the nodes already hold
# (IfNotPresent would keep it). Empty for the demo model alone, as version 1.
model_digest() {
  MODEL_DIGEST=""
  if (( ${#MODEL_ENV[@]} )); then
    MODEL_DIGEST="$(printf '%s\n' "${MODEL_ENV[@]}" | grep -Ev '^CLOTHING_(CANARY_)?MODEL(_LABELS)?=' |
      sha256sum | cut -c1-12)"
  fi
}

# with_model_tag TAG: TAG, plus "-model-<hash>" when --model is given (call after model_checked;
# a tag given with --tag is used as it is).
with_model_tag() {
  if [[ -n "${MODEL_DIGEST}" ]]; then printf '%s-model-%s\n' "$1" "${MODEL_DIGEST}"; else printf '%s\n' "$1"; fi
}

# build_images [PANTS OPTIONS...]: `./pants [OPTIONS] package` of both images. With --model, the model image comes first and alone: its export loads and
# verifies the file, and a file the export refuses stops the script with the export's one-line
# reason before the gateway image is built.
build_images() {
  local log status line
  if [[ -z "${MODEL_PATH}${CANARY_PATH}" ]]; then
    pants_for_images "$@" package deploy/images/gateway deploy/images/model
    return
  fi
  log "exporting and verifying ${MODEL_PATH:-the demo model}${CANARY_PATH:+ and the canary ${CANARY_PATH}} (Xception: a few minutes), then the model image"
  if (( DRY_RUN )); then
    pants_for_images "$@" package deploy/images/model
  else
    log="$(mktemp)"
    status=0
    pants_for_images "$@" package deploy/images/model 2>&1 | tee "${log}" >&2 || status=$?
    if (( status )); then
      line="$(grep -Eo 'export: (unexpected )?error.*' "${log}" | head -n 1)" || true
      rm -f "${log}"
      die "${MODEL_PATH:+--model ${MODEL_PATH}}${CANARY_PATH:+${MODEL_PATH:+ or }--canary-model ${CANARY_PATH}}: ${line:-building the model image failed (the output above says why)}"
    fi
    rm -f "${log}"
  fi
  pants_for_images "$@" package deploy/images/gateway
}

# --- Canary rollouts by TF Serving version labels -------------------------------------------------
#
# The model image holds one version (N) or two (N and N+1, from --canary-model). Which of them
# TF Serving loads and which one the labels `stable` and `canary` name is the ConfigMap
# tf-serving-models (deploy/base/models.config), which TF Serving re-reads every
# MODEL_CONFIG_POLL seconds; the gateway sends GATEWAY_CANARY_PERCENT of its requests to the
# `canary` label and the rest to `stable` (0: no split, TF Serving's latest version answers).
# The commands below move between these model configs, each written by `model_config`:
#
#   stable     versions N,   stable N,   canary N      after `up` and `rollback`
#   loading    versions N M, stable N,   canary N      M loading beside N
#   canary     versions N M, stable N,   canary M      `canary PERCENT`
#   returning  versions N M, stable M,   canary M      N loading again for a rollback after promote
#   promoted   versions M,   stable M,   canary M      `promote`
#
# TF Serving refuses a config whose label names a version not AVAILABLE, and applies nothing of it;
# so a label only ever moves onto a version that the previous config loaded and that every pod
# reports AVAILABLE. At 0 % the gateway asks for the latest version, so the percent goes to 0
# only once M is gone from every pod (rollback) or is the version both labels name (promote).

MODEL_NAME=clothing-model
MODEL_CONFIG_MOUNT=/etc/tf-serving/models   # deploy/base/tf-serving.yaml's mount of the ConfigMap
MODEL_CONFIG_POLL=10                        # its --model_config_file_poll_wait_seconds
ROLLOUT_TIMEOUT="${CLOTHING_ROLLOUT_TIMEOUT:-600}"   # seconds to wait for every pod at each step

# model_config STABLE CANARY VERSION...: TF Serving's model config serving VERSIONs, with the
# labels `stable` and `canary` (the gateway's GATEWAY_STABLE_LABEL and GATEWAY_CANARY_LABEL).
model_config() {
  local stable="$1" canary="$2" version
  shift 2
  printf '# TF Serving'"'"'s model config (deploy/lib.sh'"'"'s model_config writes this form; kind.sh and eks.sh\n'
  printf '# replace it through the ConfigMap tf-serving-models).\n'
  printf 'model_config_list {\n  config {\n'
  printf '    name: "%s"\n    base_path: "/models/%s"\n    model_platform: "tensorflow"\n' "${MODEL_NAME}" "${MODEL_NAME}"
  printf '    model_version_policy { specific {'
  for version in "$@"; do printf ' versions: %s' "${version}"; done
  printf ' } }\n'
  printf '    version_labels { key: "stable" value: %s }\n' "${stable}"
  printf '    version_labels { key: "canary" value: %s }\n' "${canary}"
  printf '  }\n}\n'
}

# json_string TEXT: TEXT as a JSON string.
json_string() {
  local text="$1"
  text="${text//\\/\\\\}"
  text="${text//\"/\\\"}"
  text="${text//$'\n'/\\n}"
  printf '"%s"' "${text}"
}

# rollout COMMAND [PERCENT]: canary PERCENT, promote or rollback, on the cluster of ${CONTEXT}.
rollout() {
  local command="$1" percent="${2:-}" versions current old new extra
  local -a k=(kubectl --context "${CONTEXT}" -n clothing)
  if [[ "${command}" == canary && ! "${percent}" =~ ^([1-9][0-9]?|100)$ ]]; then
    log "error: canary PERCENT: a whole number from 1 to 100, not '${percent}' (rollback sends everything back to the stable version)"
    exit 2
  fi
  log "the model versions in the deployed model image"
  if (( DRY_RUN )); then
    run "${k[@]}" exec deployment/tf-serving -c tf-serving -- ls "/models/${MODEL_NAME}"
    versions="1 2"
    log "dry run: assuming versions ${versions}"
  else
    versions="$("${k[@]}" exec deployment/tf-serving -c tf-serving -- ls "/models/${MODEL_NAME}" |
      grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')" || die "cannot list the model versions in the tf-serving pods"
  fi
  read -r old new extra <<<"${versions}"
  [[ -n "${new:-}" && -z "${extra:-}" ]] ||
    die "the deployed model image holds version(s) ${versions% } of ${MODEL_NAME}: a rollout needs two (build it with up --canary-model FILE)"
  if (( DRY_RUN )); then
    run "${k[@]}" get configmap tf-serving-models -o 'jsonpath={.data.models\.config}'
    case "${command}" in
      canary) current="$(model_config "${old}" "${old}" "${old}")" ;;
      *) current="$(model_config "${old}" "${new}" "${old}" "${new}")" ;;
    esac
    log "dry run: assuming tf-serving-models holds the $(rollout_state "${current}" "${old}" "${new}") config"
  else
    current="$("${k[@]}" get configmap tf-serving-models -o 'jsonpath={.data.models\.config}')"
  fi
  local state
  state="$(rollout_state "${current}" "${old}" "${new}")"
  [[ -n "${state}" ]] ||
    die "the ConfigMap tf-serving-models holds a model config these commands did not write (kubectl --context ${CONTEXT} -n clothing get configmap tf-serving-models -o yaml); run up to reset it"
  log "versions ${old} (stable) and ${new} (canary); the model config is at '${state}'"
  case "${command}" in
    canary)
      case "${state}" in
        promoted|returning) die "version ${new} is already promoted: roll back first, or deploy the next canary with up" ;;
        stable) set_model_config "${old}" "${old}" "${old}" "${new}" ;;&
        stable|loading) wait_for_version "${new}" available
                        set_model_config "${old}" "${new}" "${old}" "${new}" ;;
      esac
      set_canary_percent "${percent}"
      ;;
    promote)
      case "${state}" in
        stable) set_model_config "${old}" "${old}" "${old}" "${new}" ;;&
        stable|loading|canary|returning) wait_for_version "${new}" available
                                         set_model_config "${new}" "${new}" "${new}" ;;
      esac
      set_canary_percent 0
      ;;
    rollback)
      case "${state}" in
        promoted) set_model_config "${new}" "${new}" "${old}" "${new}" ;;&
        promoted|returning|loading|canary) wait_for_version "${old}" available
                                           set_model_config "${old}" "${old}" "${old}" ;;
      esac
      # At 0 % the latest version answers: not before version ${new} has left every pod.
      wait_for_version "${new}" gone
      set_canary_percent 0
      ;;
  esac
  log "${command}: done (kubectl --context ${CONTEXT} -n clothing get configmap tf-serving-models -o yaml shows the labels)"
}

# rollout_state CONFIG OLD NEW: which of the configs above CONFIG is, empty if none.
rollout_state() {
  local config="$1" old="$2" new="$3"
  if [[ "${config}" == "$(model_config "${old}" "${old}" "${old}")" ]]; then echo stable
  elif [[ "${config}" == "$(model_config "${old}" "${old}" "${old}" "${new}")" ]]; then echo loading
  elif [[ "${config}" == "$(model_config "${old}" "${new}" "${old}" "${new}")" ]]; then echo canary
  elif [[ "${config}" == "$(model_config "${new}" "${new}" "${old}" "${new}")" ]]; then echo returning
  elif [[ "${config}" == "$(model_config "${new}" "${new}" "${new}")" ]]; then echo promoted
  fi
}

# set_model_config STABLE CANARY VERSION...: writes that config into the ConfigMap, then waits
# until every tf-serving pod sees it (the kubelet's ConfigMap sync: up to about a minute) and
# TF Serving has had two polls to apply it.
set_model_config() {
  local config patch
  config="$(model_config "$@")"
  patch="$(mktemp)"
  printf '{"data": {"models.config": %s}}\n' "$(json_string "${config}"$'\n')" > "${patch}"
  log "model config: versions ${*:3}, stable ${1}, canary ${2}"
  if (( DRY_RUN )); then
    printf '# %s:\n' "${patch}"
    sed 's/^/#   /' "${patch}"
  fi
  run kubectl --context "${CONTEXT}" -n clothing patch configmap tf-serving-models --type merge --patch-file "${patch}"
  (( DRY_RUN )) || rm -f "${patch}"
  each_tf_serving_pod "sees the new model config" config_mounted "${config}"
  log "waiting $(( 2 * MODEL_CONFIG_POLL )) s: two of TF Serving's polls of the model config"
  if (( DRY_RUN )); then run sleep "$(( 2 * MODEL_CONFIG_POLL ))"; else sleep "$(( 2 * MODEL_CONFIG_POLL ))"; fi
}

# wait_for_version VERSION available|gone: until every tf-serving pod reports VERSION AVAILABLE,
# or none does.
wait_for_version() {
  each_tf_serving_pod "reports version $1 $2" "version_$2" "$1"
}

config_mounted() {
  local pod="$1" config="$2"
  [[ "$(kubectl --context "${CONTEXT}" -n clothing exec "${pod}" -c tf-serving -- \
    cat "${MODEL_CONFIG_MOUNT}/models.config")" == "${config}" ]]
}

version_available() {
  kubectl --context "${CONTEXT}" -n clothing exec "$1" -c tf-serving -- /usr/local/bin/model-ready "$2" >/dev/null 2>&1
}

version_gone() {
  ! version_available "$@"
}

# each_tf_serving_pod WHAT CHECK ARGS...: waits (ROLLOUT_TIMEOUT) until `CHECK POD ARGS...`
# holds for every running tf-serving pod.
each_tf_serving_pod() {
  local what="$1" check="$2" deadline pods pod pending
  shift 2
  local -a k=(kubectl --context "${CONTEXT}" -n clothing)
  log "waiting until every tf-serving pod ${what}"
  if (( DRY_RUN )); then
    run "${k[@]}" get pods -l app.kubernetes.io/name=tf-serving --field-selector=status.phase=Running -o name
    # (for each pod it lists, until the check holds)
    case "${check}" in
      config_mounted) run_sh "${k[*]} exec <pod> -c tf-serving -- cat ${MODEL_CONFIG_MOUNT}/models.config" ;;
      *) run_sh "${k[*]} exec <pod> -c tf-serving -- /usr/local/bin/model-ready $1" ;;
    esac
    return 0
  fi
  deadline=$(( SECONDS + ROLLOUT_TIMEOUT ))
  while :; do
    pods="$("${k[@]}" get pods -l app.kubernetes.io/name=tf-serving --field-selector=status.phase=Running -o name)"
    pending=""
    for pod in ${pods}; do
      "${check}" "${pod}" "$@" || pending="${pending} ${pod#pod/}"
    done
    [[ -n "${pods}" && -z "${pending}" ]] && return 0
    (( SECONDS < deadline )) ||
      die "not every tf-serving pod ${what} after ${ROLLOUT_TIMEOUT} s (still waiting for:${pending:- any running pod}); nothing further was changed"
    sleep 5
  done
}

# set_canary_percent PERCENT: the gateway's GATEWAY_CANARY_PERCENT, which rolls its pods.
set_canary_percent() {
  local -a k=(kubectl --context "${CONTEXT}" -n clothing)
  log "gateway: GATEWAY_CANARY_PERCENT=$1 (a rolling restart of the gateway pods; the gateway image is unchanged)"
  run "${k[@]}" set env deployment/gateway -c gateway "GATEWAY_CANARY_PERCENT=$1"
  run "${k[@]}" rollout status deployment/gateway --timeout=300s
}
