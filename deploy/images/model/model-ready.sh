#!/usr/bin/env bash
# usage: model-ready [VERSION]
# Exit 0 only when TF Serving reports a version of the model (or VERSION) as AVAILABLE.
#
# TF Serving answers GET /v1/models/<name> with 200 while the model is still loading, so the
# status code alone says nothing; this looks for the state. The tensorflow/serving image has no
# curl or wget, so the request is made with bash's /dev/tcp. Used by the image's HEALTHCHECK, by
# compose and by the Kubernetes startup and readiness probes; with VERSION by kind.sh and eks.sh
# to wait for a version of a rollout to load or unload in every pod.
#
# Environment: MODEL_NAME (set by the image), MODEL_READY_PORT (REST port, default 8501),
# MODEL_READY_HOST (default 127.0.0.1).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
version="${1:-}"
if [[ -n "${version}" && ! "${version}" =~ ^[0-9]+$ ]]; then
  echo "model-ready: VERSION must be a version number, not ${version}" >&2
  exit 2
fi

host="${MODEL_READY_HOST:-127.0.0.1}"
port="${MODEL_READY_PORT:-8501}"
model="${MODEL_NAME:?MODEL_NAME is not set}"

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
  echo "model-ready: cannot connect to ${host}:${port}" >&2
  exit 1
fi
printf 'GET /v1/models/%s%s HTTP/1.0\r\nHost: %s\r\n\r\n' "${model}" "${version:+/versions/${version}}" "${host}" >&3
# The whole answer is small (one entry per version); read it all, then look for the state.
response="$(timeout 3 cat <&3 || true)"
exec 3<&-

if [[ "${response}" =~ \"state\"[[:space:]]*:[[:space:]]*\"AVAILABLE\" ]]; then
  exit 0
fi
echo "model-ready: ${model}${version:+ version ${version}} is not AVAILABLE: $(printf '%s' "${response}" | tr -s '\r\n' ' ' | cut -c1-300)" >&2
exit 1
