#!/usr/bin/env bash
# The deployment test (tools/test.sh runs it): Arbor's manifests, image, mesh in containers,
# metrics, Prometheus, alerts and dashboard, end to end on one machine without a cluster:
#   bash tools/deploy_test.sh [BIN_DIR]      (default build/bin; needs root for podman)
# 1. every overlay renders (kubectl kustomize);
# 2. every rendered document validates against its schema, has no unknown field, and passes
#    what only an API server would catch (deploy/tools/check.mjs, which must also catch a set of
#    planted defects); yamllint; the alerts' promtool unit tests;
# 3. the image builds (deploy/image/build.sh);
# 4. the podman overlay plays (deploy/podman/play.sh); every service's health port answers
#    SERVING to a 1 s check, as a kubelet probes;
# 5. a real Prometheus scrapes the mesh (one job per ServiceMonitor, with the alerts);
# 6. traffic: `arbor solve` and `arbor generate` through the played mesh (mTLS, a bearer token),
#    and a Solve with a wrong token; the required families and types present on every /metrics
#    before the first request, `promtool check metrics` finding nothing after traffic; `up` is 1
#    for every job; every dashboard panel's query returns data;
# 7. headless Chromium loads Prometheus's graph page for the key queries: screenshots and the
#    pages (checked for a legend naming the series and a drawn line) are kept in
#    $ARBOR_DEPLOY_ARTIFACTS (default build/deploy-test);
# 8. stopping an expert worker fires ArborServiceDown (the live copy of the rules waits 5 s
#    instead of each rule's `for`); a SIGTERM to the router: its health port answers NOT_SERVING
#    (the shutdown grace), then closes.
# Bounded: every wait has a limit; the mesh and Prometheus are torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=$(realpath "${1:-build/bin}")
arbor=$bin_dir/arbor
artifacts=$(realpath -m "${ARBOR_DEPLOY_ARTIFACTS:-build/deploy-test}")
export CONTAINERS_CONF=$PWD/deploy/containers.conf
work=$(mktemp -d /var/tmp/arbor-deploy.XXXXXX)
prom_pid=""
t0=$SECONDS
step() { echo "== deploy test: $* (at $((SECONDS - t0)) s)"; }
cleanup() {
  [[ -n $prom_pid ]] && kill "$prom_pid" 2> /dev/null && wait "$prom_pid" 2> /dev/null
  if [[ -f $work/secrets/played.yaml ]]; then
    podman ps -a --format '{{.Names}}' | grep '^arbor-' | grep -v infra | while read -r c; do
      podman logs "$c" > "$artifacts/$c.log" 2>&1 || true
    done
    bash deploy/podman/play.sh down "$work/secrets" > /dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$artifacts"
mkdir -p "$artifacts" "$work/rendered" "$work/broken" "$work/rules"

step "1. render every overlay"
for o in cpu gpu podman; do
  kubectl kustomize "deploy/k8s/overlays/$o" > "$work/rendered/$o.yaml"
  echo "$o: $(grep -c '^kind:' "$work/rendered/$o.yaml") documents"
done

step "2. schemas, unknown fields, API-server checks, yamllint, alert unit tests"
bash deploy/k8s/secrets.sh "$work/secrets" arbor > /dev/null
[[ -d deploy/node_modules ]] || { echo "deploy test: run tools/setup.sh first (npm ci in deploy/)" >&2; exit 1; }
node deploy/tools/check.mjs "$work/rendered" "$work/secrets/secrets.yaml"
# The checker must catch what it claims to.
/usr/bin/python3 deploy/tools/break_manifests.py "$work/rendered/cpu.yaml" "$work/broken/cpu.yaml" \
  "$work/broken/expected.txt"
if node deploy/tools/check.mjs "$work/broken" "$work/secrets/secrets.yaml" > "$work/broken/out" 2>&1; then
  echo "deploy test: check.mjs passed manifests with planted defects" >&2
  exit 1
fi
while read -r want; do
  grep -qF "$want" "$work/broken/out" || { echo "deploy test: check.mjs missed: $want" >&2; exit 1; }
done < "$work/broken/expected.txt"
echo "check.mjs reports all $(wc -l < "$work/broken/expected.txt") planted defects"
yamllint -s -c deploy/.yamllint deploy/
/usr/bin/python3 deploy/tools/prom_check.py rules deploy/k8s/base/prometheusrule.yaml \
  "$work/rules/alerts.rules.yaml"
cp deploy/monitoring/alerts_test.yaml "$work/rules/"
promtool check rules "$work/rules/alerts.rules.yaml"
(cd "$work/rules" && promtool test rules alerts_test.yaml)

step "3. the image"
bash deploy/image/build.sh "$bin_dir"

step "4. play the podman overlay"
bash deploy/podman/play.sh up "$work/secrets" > "$artifacts/play.out"
# Every service's addresses, from the played manifests' flags: NAME ADDRESS METRICS HEALTH.
declare -A address metrics_of health_of
while read -r name addr m h; do
  address[$name]=$addr metrics_of[$name]=$m health_of[$name]=$h
done < <(/usr/bin/python3 deploy/podman/podman_playable.py endpoints "$work/secrets/played.yaml")
((${#address[@]} > 0)) || { echo "deploy test: no Arbor service in the played manifests" >&2; exit 1; }
for name in "${!address[@]}"; do
  [[ ${metrics_of[$name]} != - && ${health_of[$name]} != - ]] || {
    echo "deploy test: $name has no --metrics_address or --health_address" >&2
    exit 1
  }
done
health=("${health_of[@]}")
metrics=("${metrics_of[@]}")
planner=${address[arbor-planner]}
for _ in $(seq 1 120); do
  "$arbor" health --tls_dir=none "${health[@]}" > "$work/health" 2>&1 && break
  sleep 1
done
cat "$work/health"
"$arbor" health --tls_dir=none "${health[@]}" > /dev/null

step "5. a real Prometheus scrapes the mesh (one job per ServiceMonitor)"
/usr/bin/python3 deploy/tools/prom_check.py rules deploy/k8s/base/prometheusrule.yaml \
  "$work/rules/live.rules.yaml" --for 5
prom_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prom=127.0.0.1:$prom_port
{
  echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
  echo "rule_files: [$work/rules/live.rules.yaml]"
  echo "scrape_configs:"
  # One job per ServiceMonitor, named as the operator names them (the Service's, here also the
  # workload's, name).
  for name in "${!metrics_of[@]}"; do
    echo "  - {job_name: $name, static_configs: [{targets: ['${metrics_of[$name]}']}]}"
  done
} > "$work/prometheus.yml"
promtool check config "$work/prometheus.yml" > /dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom-data" \
  --web.listen-address="$prom" > "$artifacts/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 60); do curl -fsS "http://$prom/-/ready" > /dev/null 2>&1 && break; sleep 0.5; done
sleep 3  # a few scrapes before any traffic: rates start from the idle counters

step "6. traffic and metrics"
# Every required family has its series before the first request.
/usr/bin/python3 deploy/tools/prom_check.py metrics "${metrics[@]}"
client=(--tls_dir "$work/secrets/client" --token_file "$work/secrets/client/token")
for puzzle in "4 9 10 13" "1 2 3 4" "3 3 8 8"; do
  "$arbor" solve "${client[@]}" --planner "$planner" "$puzzle" 2> /dev/null | tail -2
done
# Routers and kv-stores are dialled by address: their certificates carry arbor-mesh.
"$arbor" generate --tls_dir "$work/secrets/client" --tls_server_name arbor-mesh \
  --router "${address[arbor-router]}" --kvstore "${address[arbor-kvstore]}" --prompt "1 2 3 4" --max_tokens 16 | tail -2
echo "wrong" > "$work/wrong-token"
if "$arbor" solve --tls_dir "$work/secrets/client" --token_file "$work/wrong-token" \
  --planner "$planner" "4 9 10 13" > "$work/wrong.out" 2>&1; then
  echo "deploy test: a Solve with a wrong token succeeded" >&2
  exit 1
fi
grep -i "unauthenticated\|token" "$work/wrong.out" | head -1
for m in "${metrics[@]}"; do
  curl -fsS "http://$m/metrics" > "$work/metrics"
  lint=$(promtool check metrics < "$work/metrics" 2>&1 || true)
  [[ -z $lint ]] || { echo "deploy test: promtool check metrics on $m: $lint" >&2; exit 1; }
done
echo "promtool check metrics: nothing to report on ${#metrics[@]} endpoints"

# More traffic, spread out, so rates and quantiles have samples over time.
for puzzle in "2 4 6 8" "5 5 5 1" "1 1 4 6" "2 3 5 12"; do
  "$arbor" solve "${client[@]}" --planner "$planner" "$puzzle" > /dev/null 2>&1
  sleep 1
done
"$arbor" solve --tls_dir "$work/secrets/client" --token_file "$work/wrong-token" \
  --planner "$planner" "4 9 10 13" > /dev/null 2>&1 || true
sleep 3
/usr/bin/python3 deploy/tools/prom_check.py up "$prom" "${!metrics_of[@]}"
/usr/bin/python3 deploy/tools/prom_check.py panels "$prom" deploy/k8s/base/grafana-dashboard.json

step "7. Chromium: Prometheus's graph page for the key queries"
shots=0
while IFS='|' read -r name expr label; do
  url="http://$prom/graph?g0.expr=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$expr")&g0.tab=0&g0.range_input=2m"
  chrome=(chromium --headless --no-sandbox --disable-gpu --disable-background-networking
    --no-first-run --disable-component-update --disable-sync --user-data-dir="$work/chrome-$name"
    --window-size=1400,1000 --virtual-time-budget=10000)
  timeout 60 "${chrome[@]}" --screenshot="$artifacts/$name.png" "$url" > /dev/null 2>&1
  timeout 60 "${chrome[@]}" --dump-dom "$url" > "$artifacts/$name.html" 2> /dev/null
  size=$(stat -c %s "$artifacts/$name.png" 2> /dev/null || echo 0)
  # The legend lists the series the graph drew: the query returned data and the page drew it.
  # ... and drew a line of several points (an SVG path "M x,y L x,y ...").
  if ((size < 20000)) || ! grep -q "class=\"legend" "$artifacts/$name.html" ||
    ! grep -qF "$label" "$artifacts/$name.html" ||
    ! grep -qE '<path class="path" d="M[0-9.]+,[0-9.]+L' "$artifacts/$name.html"; then
    echo "deploy test: the graph of $name ($expr) shows no series (screenshot $size bytes)" >&2
    exit 1
  fi
  shots=$((shots + 1))
done << 'EOF'
tokens|sum by (kind) (rate(arbor_router_tokens_total[1m]))|decode
ttft|histogram_quantile(0.99, sum by (le) (rate(arbor_router_time_to_first_token_seconds_bucket[1m])))|{}
kv-usage|arbor_kvstore_kv_usage|arbor-kvstore
tasks|sum by (status) (arbor_planner_tasks_total)|TASK_STATUS_SUCCEEDED
expert-load|sum by (expert) (rate(arbor_router_expert_tokens_total[1m]))|expert
up|up|arbor-router
EOF
echo "$shots graphs drawn with their series; screenshots in $artifacts"

step "8. an alert, then SIGTERM"
podman pod stop arbor-expert-1-pod-0 > /dev/null
/usr/bin/python3 deploy/tools/prom_check.py alert "$prom" ArborServiceDown job=arbor-expert-1
podman kill --signal TERM arbor-router-pod-0-router > /dev/null
seen="" since=$SECONDS not_serving_s=""
for _ in $(seq 1 300); do
  state=$("$arbor" health --tls_dir=none "${health_of[arbor-router]}" 2>&1 | awk '{print $2}' || true)
  [[ $state == "${seen##* }" ]] || seen="$seen $state"
  if [[ $seen == *NOT_SERVING*UNREACHABLE* ]]; then
    not_serving_s=$((SECONDS - since))
    break
  fi
  sleep 0.1
done
echo "router health after SIGTERM:$seen (the port closed after about $not_serving_s s)"
[[ $seen == *NOT_SERVING*UNREACHABLE* ]] || {
  echo "deploy test: SIGTERM did not show NOT_SERVING, then a closed port" >&2
  exit 1
}
step "done"
