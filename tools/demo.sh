#!/usr/bin/env bash
# The README's main job: installs what is missing, builds the `arbor` CLI and the services, and
# generates text on the checked-in test model twice: in this process with the CPU engine, then
# through the mesh (`arbor up`: kv-store, two expert workers and the router on free loopback
# ports, stopped again at the end). Random weights: the text is gibberish, the same both times;
# the embedded Game of 24 model replaces it. Extra arguments go to both `arbor generate` calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ARBOR_BUILD_TARGETS="arbor_cli arbor_kvstore arbor_expert arbor_router" bash tools/build.sh

echo "== in process =="
./build/bin/arbor generate --model models/test-moe --prompt "4 9 10 13" --max_tokens 32 \
  --logprobs "$@"

echo "== through the mesh =="
run_dir=$(mktemp -d)
./build/bin/arbor up --model models/test-moe --ports=auto --ready_file "$run_dir/ready.json" \
  --log_dir "$run_dir" > "$run_dir/up.out" 2>&1 &
up_pid=$!
trap 'kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -rf "$run_dir"' EXIT
for _ in $(seq 1 600); do
  [ -f "$run_dir/ready.json" ] && break
  kill -0 $up_pid 2>/dev/null || { cat "$run_dir/up.out"; exit 1; }
  sleep 0.1
done
[ -f "$run_dir/ready.json" ] || { echo "arbor up did not start; see $run_dir"; exit 1; }
cat "$run_dir/up.out"
endpoint() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$run_dir/ready.json"; }
./build/bin/arbor generate --router "$(endpoint router)" --kvstore "$(endpoint kvstore)" \
  --prompt "4 9 10 13" --max_tokens 32 --logprobs "$@"
