#!/usr/bin/env bash
# Packs the CUDA tests and the GPU bench, as built here, with the Debian shared libraries they
# load, into .gpu/arbor-gpu.tar.xz (git-ignored) for a lent GPU machine, which has CUDA but not
# Debian's -dev packages. Carry `.gpu`; there, from the repository root:
#   mkdir -p /tmp/g && tar -xJf .gpu/arbor-gpu.tar.xz -C /tmp/g
#   export LD_LIBRARY_PATH=/tmp/g/lib; for t in /tmp/g/bin/*_test; do $t; done
#   /tmp/g/bin/arbor_bench_kernels_cuda
# The CUDA runtime and cuBLAS are not packed: the GPU machine's own are used.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ARBOR_BUILD_DIR:-build}
bins=("$build/tests/arbor_kernels_cuda_test" "$build/tests/arbor_engine_cuda_test"
      "$build/tests/arbor_expert_worker_service_test" "$build/bin/arbor_bench_kernels_cuda")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in "${bins[@]}"; do
  [[ -x $b ]] || { echo "missing $b: build with CUDA first (tools/build.sh)" >&2; exit 1; }
  cp "$b" "$stage/bin/"
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart.so*|\
      libcublas*|libgcc_s.so*) ;;
      *) cp -Ln "$lib" "$stage/lib/" ;;
    esac
  done
done
strip --strip-unneeded "$stage"/bin/* "$stage"/lib/*  # debug info is most of the size
rm -rf .gpu && mkdir -p .gpu
tar -C "$stage" -cJf .gpu/arbor-gpu.tar.xz bin lib
du -h .gpu/arbor-gpu.tar.xz
