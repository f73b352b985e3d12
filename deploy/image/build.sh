#!/usr/bin/env bash
# Builds Arbor's image with podman (no daemon) on a Debian 12 base made offline by debootstrap
# from the apt archive this machine uses:
#   bash deploy/image/build.sh [BIN_DIR] [TAG]
# BIN_DIR: the built binaries (default build/bin; the tokenizer module is BIN_DIR/../lib); TAG: the image (default localhost/arbor:dev).
# The base (localhost/arbor-base:bookworm) is made once and reused while the package list is
# the same. $ARBOR_IMAGE_MIRROR overrides the archive; $ARBOR_IMAGE_BASE skips debootstrap and
# builds on that image instead (a registry's debian:12-slim, say).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir=${1:-build/bin}
tag=${2:-localhost/arbor:dev}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

packages=$(grep -v '^#' deploy/image/runtime-packages | tr '\n' ' ')
base=${ARBOR_IMAGE_BASE:-}
if [[ -z $base ]]; then
  digest=$(printf '%s' "$packages" | sha256sum | cut -c1-12)
  base=localhost/arbor-base:bookworm-$digest
  if ! podman image exists "$base"; then
    mirror=${ARBOR_IMAGE_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d /var/tmp/arbor-rootfs.XXXXXX)
    trap '$sudo rm -rf "$rootfs"' EXIT
    echo "image: debootstrap bookworm from $mirror"
    $sudo debootstrap --variant=minbase --include="${packages// /,}" bookworm "$rootfs" "$mirror" \
      > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
    $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    $sudo tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" > /dev/null
    $sudo rm -rf "$rootfs" "$rootfs.log"
    trap - EXIT
  fi
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin" "$context/lib" "$context/models"
for b in arbor arbor-planner arbor-router arbor-kvstore arbor-expert; do
  [[ -x $bin_dir/$b ]] || { echo "image: $bin_dir/$b is missing; build first" >&2; exit 1; }
  strip -o "$context/bin/$b" "$bin_dir/$b"
done
# The tokenizer module, which the binaries load from <their folder>/../lib.
spm=$bin_dir/../lib/libarbor_spm.so
[[ -f $spm ]] || { echo "image: $spm is missing; build first" >&2; exit 1; }
strip -o "$context/lib/libarbor_spm.so" "$spm"
cp -r models/game24-moe "$context/models/"
cp deploy/image/runtime-packages "$context/"
previous=$(podman image inspect "$tag" --format '{{.Id}}' 2> /dev/null || true)
podman build --quiet --network=host -f deploy/image/Containerfile --build-arg "BASE_IMAGE=$base" \
  -t "$tag" "$context" > /dev/null
# The image the tag named before, now untagged, is not kept (rebuilds would pile them up).
if [[ -n $previous && $previous != $(podman image inspect "$tag" --format '{{.Id}}') ]]; then
  podman rmi "$previous" > /dev/null 2>&1 || true
fi
echo "image: $tag on $base ($(podman image inspect "$tag" --format '{{.Size}}' | numfmt --to=iec))"
