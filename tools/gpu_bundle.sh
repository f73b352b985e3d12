#!/usr/bin/env bash
# Packs the CUDA tests, the mesh test with the service binaries it starts, and the GPU bench, as
# built here, with the Debian shared libraries they load, into .gpu/arbor-gpu.tar.xz
# (git-ignored) for a lent GPU machine, which has CUDA but not Debian's -dev packages. Carry
# `.gpu` and run `bash tools/gpu_check.sh` there. cuBLAS is not packed: the machine's own is
# loaded (the CUDA runtime is linked statically).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ARBOR_BUILD_DIR:-build}
bins=("$build/tests/arbor_kernels_cuda_test" "$build/tests/arbor_engine_cuda_test"
      "$build/tests/arbor_expert_worker_service_test" "$build/tests/arbor_mesh_test"
      "$build/bin/arbor_bench_kernels_cuda" "$build/bin/arbor_bench_engine" "$build/bin/arbor-kvstore" "$build/bin/arbor-expert"
      "$build/bin/arbor-router" "$build/bin/arbor")
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
# The tests name the source tree and the service binaries by the absolute paths of this build.
printf '%s\n%s\n' "$(pwd)" "$(cd "$build" && pwd)" > .gpu/paths
du -h .gpu/arbor-gpu.tar.xz
