#!/usr/bin/env bash
# Fairness between tenants through `arbor up` (mTLS, tokens) on the embedded model: tenant A's
# small solve (BFS 1 x 2, depth 2) alone, then the same beside tenant B's worst legal request
# (BFS 64 x 64 from a 64-proposal root, depth 32, 1024-token thoughts, 100,000 nodes: every
# limit planner.proto allows). Prints A's median latency each way and their ratio (the goal is at
# most 2). A bench, not a test: it asserts nothing. Usage: bench/fairness.sh [BUILD_DIR] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runs=${2:-5}
arbor="$build/bin/arbor"
source tools/arbor_up.bash

data=$(mktemp -d)
printf 'a-token\n' > "$data/a"
printf 'b-token\n' > "$data/b"
{
  printf 'sha256:%s tenant=a\n' "$(printf %s a-token | sha256sum | cut -d' ' -f1)"
  printf 'sha256:%s tenant=b\n' "$(printf %s b-token | sha256sum | cut -d' ' -f1)"
} > "$data/tokens"
# arbor up keeps an existing tokens file: these two tenants are the mesh's.
arbor_up "$arbor" --model models/game24-moe --workers 2 --data_dir "$data"
planner=$(arbor_endpoint planner)
export ARBOR_TLS_DIR="$data/tls"

small() {
  local t0 t1
  t0=$(date +%s.%N)
  "$arbor" solve --planner "$planner" --token_file "$data/a" --preset game24 --strategy bfs \
    --breadth 1 --proposals 2 --depth 2 --max_thought_tokens 24 "4 9 10 13" > /dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for _ in $(seq 1 "$runs"); do small; done | median > "$data/alone"
"$arbor" solve --planner "$planner" --token_file "$data/b" --preset game24 --strategy bfs \
  --breadth 64 --proposals 64 --root_proposals 64 --depth 32 --max_thought_tokens 1024 \
  --max_nodes 100000 --task_id worst "4 9 10 13" > "$data/b.out" 2>&1 &
worst=$!
sleep 5  # B's first rounds are in flight
for _ in $(seq 1 "$runs"); do small; done | median > "$data/beside"
"$arbor" cancel --planner "$planner" --token_file "$data/b" worst > /dev/null || true
wait "$worst" 2>/dev/null || true
alone=$(cat "$data/alone")
beside=$(cat "$data/beside")
printf 'tenant A small solve, median of %d: alone %.2f s, beside B'"'"'s worst request %.2f s, ratio %.2f\n' \
  "$runs" "$alone" "$beside" "$(awk -v a="$alone" -v b="$beside" 'BEGIN {print b / a}')"
rm -rf "$data"
