#!/usr/bin/env bash
# On a lent GPU machine, from the repository root, with `.gpu` (made here by
# tools/gpu_bundle.sh) carried: unpacks the bundle, makes the absolute paths the tests were built
# with resolve to this copy, then runs every CUDA test (the CUDA sides against the CPU
# references, the CUDA expert and engine backends, the mesh on --backend=cuda) and the GPU
# bench. Logs and the bench's JSON lines go to $OUT (or .gpu/out). Exit status: failed steps.
set -uo pipefail
root=$(pwd)
out=${OUT:-$root/.gpu/out}
mkdir -p "$out" /tmp/arbor-gpu
tar -xJf .gpu/arbor-gpu.tar.xz -C /tmp/arbor-gpu
export LD_LIBRARY_PATH=/tmp/arbor-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do  # cuBLAS (dlopen)
  [[ -d $d ]] && LD_LIBRARY_PATH+=:$d
done
src=$(sed -n 1p .gpu/paths)
build=$(sed -n 2p .gpu/paths)
if [[ $src != "$root" && ! -e $src ]]; then
  mkdir -p "$(dirname "$src")" && ln -s "$root" "$src" ||
    { echo "cannot link $src to this copy (the tests name it): run as root" >&2; exit 1; }
fi
mkdir -p "$build/bin" "$build/tests"
cp /tmp/arbor-gpu/bin/arbor-* /tmp/arbor-gpu/bin/arbor "$build/bin/"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
failed=0
for t in arbor_kernels_cuda_test arbor_engine_cuda_test arbor_expert_worker_service_test; do
  echo "== $t"
  (cd "$src" && /tmp/arbor-gpu/bin/$t) > "$out/$t.log" 2>&1 || failed=$((failed + 1))
  tail -3 "$out/$t.log"
done
echo "== arbor_mesh_test (cuda)"
(cd "$src" && /tmp/arbor-gpu/bin/arbor_mesh_test --gtest_filter='*Cuda*') \
  > "$out/arbor_mesh_test.log" 2>&1 || failed=$((failed + 1))
tail -3 "$out/arbor_mesh_test.log"
echo "== arbor_bench_kernels_cuda"
/tmp/arbor-gpu/bin/arbor_bench_kernels_cuda | tee "$out/bench.jsonl" || failed=$((failed + 1))
for backend in cpu cuda; do  # the whole engine (game24-moe), CPU then GPU, same flags
  echo "== arbor_bench_engine --backend=$backend"
  (cd "$src" && /tmp/arbor-gpu/bin/arbor_bench_engine --model models/game24-moe \
     --backend "$backend" --batches 1,16,64) | tee "$out/engine_$backend.json" ||
    failed=$((failed + 1))
done
exit "$failed"
