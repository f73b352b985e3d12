#!/usr/bin/env bash
# Scale-out figures: the main job's search (BFS, 10 proposals, label values) on the embedded Game
# of 24 model, SOLVES concurrent solves (run twice: the second pass finds the prompts cached),
# through three meshes from `arbor up`, one after the other:
#   single      1 planner, 1 router, 1 kv-store
#   affinity    2 planners, 2 routers, 2 kv-store shards; each task keeps to its router
#   roundrobin  the same, each round of a task on the next router in turn (--router_affinity=false)
# For each: solves per second and right answers, Extends per router and tasks (root sequences)
# per kv-store shard with their balance (max/mean), and the routers' prefix-cache hit rate
# (KV tokens found in the router's own cache / those it needed from the kv-store or its cache).
# Prints a table and writes every figure as JSON to OUT (default: fleet.json).
#   bash bench/fleet.sh [BUILD_DIR] [SOLVES] [BFS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
solves=${2:-24}
bfs=${3:-5}
out=${4:-fleet.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ARBOR_MAX_TASKS_PER_TENANT=$solves
export ARBOR_MAX_TASKS=$((solves > 64 ? solves : 64))

run() {
  local name=$1
  shift
  (
    # shellcheck source=../tools/arbor_up.bash
    source tools/arbor_up.bash
    arbor_up "$build/bin/arbor" --model models/game24-moe --workers 2 "$@"
    "$build/bin/arbor" chaos --up_ready_file "$ARBOR_UP_DIR/ready.json" --model models/game24-moe \
      --solves "$solves" --kills 0 --bfs "$bfs" --proposals 10 --value label \
      --thought_temperature 0.4 --json_out "$work/$name.chaos.json" game24 > "$work/$name.out"
    /usr/bin/python3 - "$ARBOR_UP_DIR/ready.json" "$work/$name.metrics.json" <<'PY'
import json, sys, urllib.request
ready = json.load(open(sys.argv[1]))
scraped = {}
for s in ready["services"]:
    if "metrics" in s and (s["name"].startswith("router") or s["name"].startswith("kvstore")):
        scraped[s["name"]] = urllib.request.urlopen("http://%s/metrics" % s["metrics"], timeout=10).read().decode()
json.dump(scraped, open(sys.argv[2], "w"))
PY
  )
}

run single --planners 1 --routers 1 --kvstores 1
run affinity --planners 2 --routers 2 --kvstores 2
ARBOR_ROUTER_AFFINITY=false run roundrobin --planners 2 --routers 2 --kvstores 2

/usr/bin/python3 - "$work" "$out" "$solves" <<'PY'
import json, re, sys
work, out, solves = sys.argv[1], sys.argv[2], int(sys.argv[3])

def value(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total

def balance(xs):
    mean = sum(xs) / len(xs)
    return max(xs) / mean if mean else 0.0

report = {}
for name in ("single", "affinity", "roundrobin"):
    chaos = json.load(open("%s/%s.chaos.json" % (work, name)))
    metrics = json.load(open("%s/%s.metrics.json" % (work, name)))
    routers = sorted(k for k in metrics if k.startswith("router"))
    shards = sorted(k for k in metrics if k.startswith("kvstore"))
    extends = [value(metrics[r], "arbor_router_requests_total", method="Extend") for r in routers]
    tasks = [value(metrics[k], "arbor_kvstore_requests_total", method="CreateSequence", code="OK")
             for k in shards]
    cached = sum(value(metrics[r], "arbor_router_tokens_total", kind="cached") for r in routers)
    fetched = sum(value(metrics[r], "arbor_router_tokens_total", kind="fetched") for r in routers)
    phases = chaos["phases"]
    report[name] = {
        "solves_per_s": [p["submitted"] / p["wall_seconds"] for p in phases],
        "right": [p["right"] for p in phases],
        "completed": [p["completed"] for p in phases],
        "extends_per_router": extends, "extends_balance": balance(extends),
        "tasks_per_shard": tasks, "tasks_balance": balance(tasks),
        "router_cache_hit_rate": cached / (cached + fetched) if cached + fetched else 0.0,
        "cached_tokens": cached, "fetched_tokens": fetched,
    }
json.dump(report, open(out, "w"), indent=2)
print("%-10s %13s %11s %17s %9s %16s %9s %8s" % (
    "mesh", "solves/s 1|2", "right 1|2", "Extends/router", "max/mean",
    "tasks/shard", "max/mean", "hit rate"))
for name, r in report.items():
    print("%-10s %6.3f|%5.3f %5d|%5d %17s %9.2f %16s %9.2f %7.1f%%" % (
        name, r["solves_per_s"][0], r["solves_per_s"][1], r["right"][0], r["right"][1],
        "/".join("%d" % x for x in r["extends_per_router"]), r["extends_balance"],
        "/".join("%d" % x for x in r["tasks_per_shard"]), r["tasks_balance"],
        100 * r["router_cache_hit_rate"]))
single = report["single"]["router_cache_hit_rate"]
for name in ("affinity", "roundrobin"):
    r = report[name]["router_cache_hit_rate"]
    print("%s: hit rate %.1f%% of the single router's" % (name, 100 * r / single if single else 0))
PY
