#!/usr/bin/env bash
# Chaos run of the main job: `arbor up` on the embedded Game of 24 model (its own Redis, mTLS,
# tokens), then `arbor chaos` with the main job's search (BFS, 10 proposals, label values): SOLVES concurrent BFS solves calm, then the same solves while a
# service (planner, router, kv-store, Redis, an expert worker: each without a replica) is killed
# with SIGKILL every EVERY_S seconds, KILLS in all; `arbor up` restarts each. Prints the table
# (submitted, completed, failed, lost, right answers, latency) and writes it as JSON to OUT.
#   bash bench/chaos.sh [BUILD_DIR] [SOLVES] [KILLS] [EVERY_S] [BFS] [OUT] [TARGETS] [UP FLAGS...]
# e.g. a fleet, killing planners, routers and kv-store shards:
#   bash bench/chaos.sh build 40 6 5 5 "" planner,router,kvstore --planners 2 --routers 2 --kvstores 2
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
solves=${2:-40}
kills=${3:-10}
every=${4:-4}
bfs=${5:-5}
out=${6:-}
targets=${7:-router,kvstore,expert,planner,redis}
shift $(($# < 7 ? $# : 7))
# shellcheck source=../tools/arbor_up.bash
source tools/arbor_up.bash
# Every solve of a phase runs at once: the planner admits them all.
export ARBOR_MAX_TASKS_PER_TENANT=$solves
export ARBOR_MAX_TASKS=$((solves > 64 ? solves : 64))
arbor_up "$build/bin/arbor" --model models/game24-moe --workers 2 "$@"
"$build/bin/arbor" chaos --up_ready_file "$ARBOR_UP_DIR/ready.json" --model models/game24-moe \
  --solves "$solves" --kills "$kills" --kill_every_s "$every" --bfs "$bfs" --targets "$targets" \
  --proposals 10 --value label --thought_temperature 0.4 \
  ${out:+--json_out "$out"} game24
