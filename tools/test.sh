#!/usr/bin/env bash
# The README's test command: installs what is missing, builds with -Werror, runs clang's
# thread-safety analysis over every translation unit with lock annotations, runs every test
# through CTest, the deployment test (tools/deploy_test.sh: manifests, image, the mesh played in
# containers, Prometheus, alerts, dashboard, Chromium), then rebuilds the tests with
# AddressSanitizer + UndefinedBehaviorSanitizer (CPU only) and runs them again, the checkpoint
# loader's bad-input tests among them, and last runs every fuzz target (clang's libFuzzer) for a
# bounded time on its corpus and regressions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

echo "== build (warnings are errors) =="
ARBOR_BUILD_DIR=build bash tools/build.sh -DARBOR_WERROR=ON
echo "== thread-safety analysis (clang, every annotated translation unit) =="
/usr/bin/python3 tools/thread_safety.py build
echo "== tests =="
ctest --test-dir build --output-on-failure --timeout 600

echo "== deployment: manifests, image, the mesh in containers, Prometheus, alerts, dashboard =="
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo bash tools/deploy_test.sh build/bin

echo "== tests under ASan + UBSan =="
ARBOR_BUILD_DIR=build-asan bash tools/build.sh -DARBOR_WERROR=ON -DARBOR_SANITIZE=ON \
  -DARBOR_ENABLE_CUDA=OFF -DARBOR_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=Debug
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 900

echo "== fuzzing (libFuzzer, ASan + UBSan; every target for a bounded time) =="
bash tools/fuzz.sh "${ARBOR_FUZZ_SECONDS:-10}"
