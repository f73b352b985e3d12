#!/usr/bin/env bash
# The embedded Game of 24 model through the real mesh: `arbor up` on free loopback ports with
# models/game24-moe, then `arbor eval game24` on 20 held-out puzzles (spread over the 274) with
# ToT BFS b=5, scored by exact rational arithmetic. Fails if fewer than FLOOR are solved: a
# numerical bug in the kernels, the routing or the forks shows up as lost puzzles. FLOOR is set
# from the measured rate with margin (docs/REASONING.md). Bounded: the mesh must be up within
# 90 s and the evaluation done within 600 s.
set -euo pipefail
arbor=$1
source_dir=$2
floor=${3:-13}
source "$source_dir/tools/arbor_up.bash"
arbor_up "$arbor" --model "$source_dir/models/game24-moe" --workers 2
out=$(timeout 600 "$arbor" eval game24 --model "$source_dir/models/game24-moe" \
  --kvstore "$(arbor_endpoint kvstore)" --router "$(arbor_endpoint router)" \
  --planner "$(arbor_endpoint planner)" --puzzles 20 --modes bfs5 --proposals 10 --value label \
  --thought_temperature 0.4)
echo "$out"
solved=$(sed -n 's/^== bfs5: \([0-9]*\)\/20 solved.*/\1/p' <<< "$out")
[ -n "$solved" ] || { echo "no bfs5 summary line"; exit 1; }
echo "bfs5 solved $solved of 20 (floor $floor)"
[ "$solved" -ge "$floor" ]
