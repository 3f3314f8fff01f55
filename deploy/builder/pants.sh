#!/usr/bin/env bash
# ./pants inside the builder container (deploy/builder/Dockerfile): the documented way to build the
# images on a host that cannot build them itself. For example:
#
#   deploy/builder/pants.sh package deploy/images/gateway deploy/images/model
#
# The checkout is mounted at /src, the bootstrap and Pants caches live in the named volume
# clothing-builder-cache (the second build reuses them), and image builds go to the host's Docker
# daemon (DOCKER_HOST's socket, else /var/run/docker.sock).
#
# Environment:
#   CLOTHING_BUILDER_BASE     base image for the builder (default: debian:bookworm-slim)
#   CLOTHING_BUILDER_NETWORK  docker network for the builder (default: docker's; "host" where the
#                             daemon has no bridge)
#   CLOTHING_BUILDER_VOLUME   the cache volume (default: clothing-builder-cache)
#   IMAGE_TAG, BASE_IMAGE     passed on to Pants' image builds (pants.toml [docker])
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -eq 0 ]]; then
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit $(($# == 0 ? 2 : 0))
fi
require docker "a Docker engine: https://docs.docker.com/engine/install/"

in_builder "$@"
