#!/usr/bin/env bash
# Plays deploy/k8s/overlays/podman on this machine with podman (no daemon, host network,
# loopback only), or tears it down:
#   bash deploy/podman/play.sh up SECRETS_DIR    # SECRETS_DIR from deploy/k8s/secrets.sh
#   bash deploy/podman/play.sh down SECRETS_DIR
# The image is localhost/arbor:dev (deploy/image/build.sh). Services listen on 127.0.0.1 on the
# ports deploy/k8s/overlays/podman gives them (`podman_playable.py endpoints` lists them); `up`
# refuses to start when one of them is taken.
set -euo pipefail
cd "$(dirname "$0")/../.."
action=${1:?usage: play.sh up|down SECRETS_DIR}
secrets=$(realpath "${2:?usage: play.sh up|down SECRETS_DIR}")
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
played=$secrets/played.yaml

case $action in
  up)
    kubectl kustomize deploy/k8s/overlays/podman |
      /usr/bin/python3 deploy/podman/podman_playable.py "$secrets" > "$played"
    # Every loopback port the services' flags name must be free.
    for p in $(grep -oE '127\.0\.0\.1:[0-9]+' "$played" | cut -d: -f2 | sort -u); do
      if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
        echo "play.sh: port $p on 127.0.0.1 is taken; stop what holds it" >&2
        exit 1
      fi
    done
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
