#!/usr/bin/env bash
# Installs every Debian package Arbor needs to build, test and run. Idempotent: packages that are
# already present are skipped, and `apt-get update` runs only when something is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format clang
  # libFuzzer and the sanitizers' runtime for clang (tools/fuzz.sh); OpenSSL (tokens, certificates)
  libclang-rt-14-dev libssl-dev
  # RPC, protos, abseil
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libabsl-dev
  # state store
  libhiredis-dev redis-server
  # metrics
  prometheus-cpp-dev
  # math, tokenizer, json, logging
  libopenblas-dev libsentencepiece-dev sentencepiece nlohmann-json3-dev libspdlog-dev libfmt-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # tools (Debian's /usr/bin/python3)
  python3 python3-torch python3-numpy python3-sentencepiece python3-grpcio python3-protobuf
  python3-yaml
  # the deployment test (tools/deploy_test.sh): the image built and played without a daemon, a
  # real Prometheus and promtool, yamllint, headless Chromium (the schema checks use the
  # machine's Node.js and npm, with deploy/package-lock.json)
  podman buildah runc catatonit debootstrap prometheus yamllint chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The deployment checks' npm packages (deploy/package-lock.json), with the machine's Node.js:
# installed again only when the lockfile changed.
cd "$(dirname "$0")/.."
if ! command -v npm > /dev/null; then
  echo "setup: npm (Node.js) is needed for deploy/'s checks and is not on PATH" >&2
  exit 1
fi
stamp=deploy/node_modules/.arbor-lockfile-sha256
want=$(sha256sum deploy/package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: npm ci in deploy/"
  (cd deploy && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
  echo "$want" > "$stamp"
fi
