#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang under AddressSanitizer + UndefinedBehavior-
# Sanitizer (into build-fuzz, or $ARBOR_FUZZ_BUILD_DIR) and runs each for SECONDS (default 20)
# on a scratch copy of its seed corpus (fuzz/corpus/<target>/) plus the inputs that once crashed
# (fuzz/regressions/<target>/, replayed every time). Prints the executions per target and in
# all; fails if any target crashes, leaks or times out, leaving the input in
# <build>/fuzz/artifacts/<target>/ (fix the bug, then add the input to fuzz/regressions/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
build=${ARBOR_FUZZ_BUILD_DIR:-build-fuzz}
ARBOR_BUILD_DIR=$build ARBOR_BUILD_TARGETS=arbor_fuzz_all bash tools/build.sh \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DARBOR_FUZZ=ON -DARBOR_SANITIZE=ON \
  -DARBOR_WERROR=ON -DARBOR_ENABLE_CUDA=OFF -DARBOR_BUILD_TESTS=OFF -DARBOR_BUILD_BENCHMARKS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
total=0
failed=()
printf '%-24s %12s %8s\n' target executions corpus
for bin in "$build"/fuzz/*_fuzz; do
  name=$(basename "$bin")
  scratch=$(mktemp -d)
  artifacts="$build/fuzz/artifacts/$name"
  mkdir -p "$artifacts" "fuzz/regressions/$name"
  [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$scratch/"
  log="$build/fuzz/$name.log"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$scratch" \
      "fuzz/regressions/$name" > "$log" 2>&1; then
    :
  else
    failed+=("$name")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  printf '%-24s %12s %8s\n' "$name" "${runs:-?}" "$(ls "$scratch" | wc -l)"
  total=$((total + ${runs:-0}))
  rm -rf "$scratch"
done
echo "fuzzing: $total executions in all, ${#failed[@]} targets failed"
if ((${#failed[@]} > 0)); then
  for f in "${failed[@]}"; do
    echo "== $f (see $build/fuzz/$f.log) =="
    grep -m 20 -E "ERROR|SUMMARY|runtime error|==[0-9]+==" "$build/fuzz/$f.log" || true
  done
  exit 1
fi
