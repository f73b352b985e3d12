#!/usr/bin/env bash
# Configures and builds Arbor into build/ (or $ARBOR_BUILD_DIR). Extra arguments go to CMake,
# e.g. tools/build.sh -DARBOR_ENABLE_CUDA=OFF. Set ARBOR_BUILD_TARGETS to build only some targets.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${ARBOR_BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
elif (($# > 0)); then
  cmake "$build_dir" "$@"
fi
# shellcheck disable=SC2086
cmake --build "$build_dir" --parallel "$(nproc)" ${ARBOR_BUILD_TARGETS:+--target $ARBOR_BUILD_TARGETS}
