#!/usr/bin/env bash
# Build the wheels the fetchml_agent role installs on hosts without a package index:
#   scripts/build_wheelhouse.sh [DIR]        (default .whl/)
# DIR gets this repository's wheel (rebuilt every time; byte-identical when the sources did not
# change, so the role sees no change) and binary wheels of all its dependencies, resolved for the
# hosts' Python rather than this machine's: TARGET_PYTHON (default 3.11.2, Debian 12's python3) and
# TARGET_GLIBC (default 36, Debian 12's glibc 2.36: every manylinux wheel up to it). They are fetched
# once, and again when pyproject.toml changes; pip uses this machine's configuration for the index.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
py=${PYTHON:-python3}
target_python=${TARGET_PYTHON:-3.11.2}
target_glibc=${TARGET_GLIBC:-36}
platforms=(--platform linux_x86_64 --platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for minor in $(seq 5 "$target_glibc"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
mkdir -p "$dir"
rm -f "$dir"/fetchml_jupyter-*.whl
# A fixed timestamp makes the wheel's bytes depend on the sources only.
SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel -q --no-deps --wheel-dir "$dir" .
wheel=$(ls "$dir"/fetchml_jupyter-*.whl)
stamp="$dir/.dependencies-$target_python-glibc2.$target_glibc"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "fetching the dependencies' wheels for Python $target_python (glibc 2.$target_glibc) into $dir"
  "$py" -m pip download -q --dest "$dir" --only-binary=:all: \
    --python-version "$target_python" --implementation cp "${platforms[@]}" "$wheel"
  touch "$stamp"
fi
echo "$wheel"
