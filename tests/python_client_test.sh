#!/usr/bin/env bash
# The Python client example against a real mesh: `arbor up` on free loopback ports, then
# examples/python/solve.py with Debian's python3-grpcio and the build's stubs. Bounded: the mesh
# must be up within 90 s and the solve done within 120 s.
set -euo pipefail
arbor=$1
stubs=$2
source_dir=$3
source "$source_dir/tools/arbor_up.bash"
arbor_up "$arbor" --model "$source_dir/models/test-moe" --workers 1
planner=$(arbor_endpoint planner)
[ -n "$planner" ] || { echo "no planner in $ARBOR_UP_DIR/ready.json"; exit 1; }
out=$(ARBOR_PYTHON_STUBS="$stubs" timeout 120 /usr/bin/python3 \
  "$source_dir/examples/python/solve.py" --planner "$planner" "4 9 10 13")
echo "$out"
grep -q "^result: task " <<< "$out"
grep -q "^counts: 10 nodes" <<< "$out"   # BFS b=2, 3 proposals, depth 2: 1 + 3 + 6
