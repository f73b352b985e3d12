#!/usr/bin/env bash
# The README's main job: installs what is missing, builds the `arbor` CLI and the services, then
# with the embedded Game of 24 model (models/game24-moe, trained by tools/train_game24.py):
# lets the model play one puzzle alone in this process (a single greedy pass); starts the mesh
# (`arbor up`: kv-store, two expert workers, router and planner on free loopback ports); plays
# the same puzzle through it (the same tokens); solves two puzzles with tree-of-thought BFS,
# printing each tree, the answer (the model's, then judged by exact rational arithmetic, which the
# search never uses) and the prefill that forking saved;
# then scores a single greedy pass against BFS with 5 states per level on 10 held-out puzzles
# (`arbor eval game24`: exact rational arithmetic, never the model), and stops the mesh.
# Extra arguments go to both `arbor generate` calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ARBOR_BUILD_TARGETS="arbor_cli arbor_kvstore arbor_expert arbor_router arbor_planner" \
  bash tools/build.sh

model=models/game24-moe
prompt=$'Use the numbers and + - * / to make 24, one operation per line.\nInput: 4 9 10 13\nSteps:\n'
echo "== the model alone, in process (greedy) =="
./build/bin/arbor generate --model "$model" --prompt "$prompt" --max_tokens 96 "$@"

echo "== through the mesh =="
source tools/arbor_up.bash
arbor_up ./build/bin/arbor --model "$model"
cat "$ARBOR_UP_DIR/up.out"
./build/bin/arbor generate --router "$(arbor_endpoint router)" --kvstore "$(arbor_endpoint kvstore)" \
  --prompt "$prompt" --max_tokens 96 "$@"

echo "== tree-of-thought search through the planner =="
for puzzle in "4 9 10 13" "2 5 6 7"; do
  ./build/bin/arbor solve --planner "$(arbor_endpoint planner)" --preset game24 --strategy bfs \
    --breadth 5 --proposals 10 --root_proposals 50 --depth 4 --value label \
    --thought_temperature 0.4 "$puzzle"
done

echo "== greedy vs. tree search on 10 held-out puzzles =="
./build/bin/arbor eval game24 --model "$model" --kvstore "$(arbor_endpoint kvstore)" \
  --router "$(arbor_endpoint router)" --planner "$(arbor_endpoint planner)" --puzzles 10 \
  --modes greedy,bfs5 --proposals 10 --value label --thought_temperature 0.4
