#!/usr/bin/env bash
# Build the Debian 12 base image from a debootstrap rootfs: no registry is pulled from.
#   images/base/build.sh [TAG]      (default fetchml/debian:bookworm)
# Idempotent: an existing image of that tag is kept unless FORCE=1.
set -euo pipefail
tag=${1:-fetchml/debian:bookworm}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present"; exit 0
fi
rootfs=$(mktemp -d /tmp/fetchml-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
mirror=${DEBIAN_MIRROR:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
echo "debootstrap bookworm from ${mirror:-the default mirror} ..."
debootstrap --variant=minbase bookworm "$rootfs" ${mirror:+"$mirror"} >/tmp/fetchml-debootstrap.log 2>&1 \
  || { tail -20 /tmp/fetchml-debootstrap.log; exit 1; }
# Trust the same CAs as the host (an intercepting egress proxy may sign package downloads).
cp -r /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list" 2>/dev/null || true
tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null
echo "built $tag"
