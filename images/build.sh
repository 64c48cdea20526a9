#!/usr/bin/env bash
# Build the images that the docker (and nomad) runtimes run, locally, with no registry pull:
#   images/build.sh        the debootstrap base (images/base/build.sh), then the workspace image
# The workspace image is tagged fetchml/workspace:<package version> (override: WORKSPACE_IMAGE) and
# labelled with a hash of images/workspace/ and of the base image: when the image already carries
# that hash nothing is built (FORCE=1 rebuilds). pip inside the build uses PIP_INDEX_URL, else the
# index of this machine's pip configuration, else pip's default; nothing else is fetched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/../fetchml_agent/__init__.py")
tag=${WORKSPACE_IMAGE:-fetchml/workspace:$version}
base=${BASE_IMAGE:-fetchml/debian:bookworm}

"$here/base/build.sh" "$base"

# images/workspace/fetchml links to the repository's fetchml/ helper package: follow links (-L, -h).
hash=$( { (cd "$here/workspace" && find -L . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
          docker image inspect -f '{{.Id}}' "$base"; } | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{ index .Config.Labels "io.fetchml.image.hash" }}' "$tag" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$hash" ]; then
  echo "workspace image $tag is up to date"; exit 0
fi

old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
index=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
case "$index" in file:*) index= ;; esac   # a file:// index on this host is not visible in the build
start=$(date +%s)
tar -C "$here/workspace" --exclude=__pycache__ -ch . | docker build --tag "$tag" \
  --build-arg BASE="$base" --build-arg FETCHML_IMAGE_HASH="$hash" \
  ${index:+--build-arg PIP_INDEX_URL="$index"} \
  -
echo "built workspace image $tag in $(( $(date +%s) - start ))s"
# The image this one replaced is untagged now: remove it unless a container still uses it.
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
