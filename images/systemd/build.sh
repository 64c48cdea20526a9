#!/usr/bin/env bash
# Build the Debian 12 systemd image that every molecule scenario runs (no registry pull).
#   images/systemd/build.sh [TAG]      (default fetchml/ansible-systemd:bookworm)
# Builds the debootstrap base image first when it is missing. Idempotent: an existing image of
# that tag is kept unless FORCE=1, so CI builds it once and every scenario reuses it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-fetchml/ansible-systemd:bookworm}
base=${BASE_IMAGE:-fetchml/debian:bookworm}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "systemd image $tag already present"; exit 0
fi
docker image inspect "$base" >/dev/null 2>&1 || "$here/../base/build.sh" "$base"
docker build --pull=false --build-arg BASE="$base" -t "$tag" "$here"
echo "built $tag"
