#!/usr/bin/env bash
# The README's main job: installs what is missing, builds the `arbor` CLI and the services, then
# on the checked-in test model: generates text in this process with the CPU engine; starts the
# mesh (`arbor up`: kv-store, two expert workers, router and planner on free loopback ports);
# generates the same text through it; solves two Game of 24 puzzles with tree-of-thought BFS,
# printing each tree, the answer and the prefill that forking saved; and stops the mesh.
# Random weights: the text is gibberish and no puzzle is solved until the embedded Game of 24
# model replaces the test model. Extra arguments go to both `arbor generate` calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ARBOR_BUILD_TARGETS="arbor_cli arbor_kvstore arbor_expert arbor_router arbor_planner" \
  bash tools/build.sh

echo "== in process =="
./build/bin/arbor generate --model models/test-moe --prompt "4 9 10 13" --max_tokens 32 \
  --logprobs "$@"

echo "== through the mesh =="
source tools/arbor_up.bash
arbor_up ./build/bin/arbor --model models/test-moe
cat "$ARBOR_UP_DIR/up.out"
./build/bin/arbor generate --router "$(arbor_endpoint router)" --kvstore "$(arbor_endpoint kvstore)" \
  --prompt "4 9 10 13" --max_tokens 32 --logprobs "$@"

echo "== tree-of-thought search through the planner =="
for puzzle in "4 9 10 13" "1 2 3 4"; do
  ./build/bin/arbor solve --planner "$(arbor_endpoint planner)" --preset game24 --strategy bfs \
    --breadth 2 --proposals 3 --depth 3 --max_thought_tokens 16 "$puzzle"
done
