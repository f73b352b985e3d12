#!/usr/bin/env bash
# The Python client example against a real mesh: `arbor up` on free loopback ports, then
# examples/python/solve.py with Debian's python3-grpcio and the build's stubs. Bounded: the mesh
# must be up within 90 s and the solve done within 120 s.
set -euo pipefail
arbor=$1
stubs=$2
source_dir=$3
run_dir=$(mktemp -d)
"$arbor" up --model "$source_dir/models/test-moe" --ports=auto --workers 1 \
  --ready_file "$run_dir/ready.json" --log_dir "$run_dir" > "$run_dir/up.out" 2>&1 &
up_pid=$!
trap 'kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -rf "$run_dir"' EXIT
for _ in $(seq 1 900); do
  [ -f "$run_dir/ready.json" ] && break
  kill -0 $up_pid 2>/dev/null || { cat "$run_dir/up.out"; exit 1; }
  sleep 0.1
done
planner=$(sed -n 's/^  "planner": "\(.*\)",\{0,1\}$/\1/p' "$run_dir/ready.json")
[ -n "$planner" ] || { echo "no planner in $run_dir/ready.json"; exit 1; }
out=$(ARBOR_PYTHON_STUBS="$stubs" timeout 120 /usr/bin/python3 \
  "$source_dir/examples/python/solve.py" --planner "$planner" "4 9 10 13")
echo "$out"
grep -q "^result: task " <<< "$out"
grep -q "^counts: 10 nodes" <<< "$out"   # BFS b=2, 3 proposals, depth 2: 1 + 3 + 6
