#!/usr/bin/env bash
# Plays deploy/k8s/overlays/podman on this machine with podman (no daemon, host network,
# loopback only), or tears it down:
#   bash deploy/podman/play.sh up SECRETS_DIR    # SECRETS_DIR from deploy/k8s/secrets.sh
#   bash deploy/podman/play.sh down SECRETS_DIR
# The image is localhost/arbor:dev (deploy/image/build.sh). Services listen on 127.0.0.1: the
# planner on 50081, router 50071, kv-store 50051, experts 50061-50062, Redis 6379; metrics on
# 9091-9121, health on 8081-8085 (deploy/k8s/overlays/podman). `up` refuses to start when one
# of these ports is taken.
set -euo pipefail
cd "$(dirname "$0")/../.."
action=${1:?usage: play.sh up|down SECRETS_DIR}
secrets=$(realpath "${2:?usage: play.sh up|down SECRETS_DIR}")
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
played=$secrets/played.yaml
ports=(50081 50071 50051 50061 50062 6379 9091 9101 9102 9111 9121 8081 8082 8083 8084 8085)

case $action in
  up)
    for p in "${ports[@]}"; do
      if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
        echo "play.sh: port $p on 127.0.0.1 is taken; stop what holds it" >&2
        exit 1
      fi
    done
    kubectl kustomize deploy/k8s/overlays/podman |
      /usr/bin/python3 deploy/podman/podman_playable.py "$secrets" > "$played"
    # The pods run as uid 10001 (the image's user) and read the secrets' files.
    chown -R 10001:10001 "$secrets/tls" "$secrets/tokens" "$secrets/redis"
    podman kube play --replace "$played"
    ;;
  down)
    if [[ -f $played ]]; then
      podman kube down "$played" || true
      for v in $(awk '/^kind: PersistentVolumeClaim/ {f=1} f && /^  name:/ {print $2; f=0}' "$played"); do
        podman volume rm -f "$v" > /dev/null 2>&1 || true
      done
    fi
    ;;
  *)
    echo "play.sh: up or down, not $action" >&2
    exit 2
    ;;
esac
