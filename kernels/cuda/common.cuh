// Device helpers shared by the kernels (CUDA sources only).
#pragma once

#include <climits>

namespace arbor::kernels {

__device__ __forceinline__ float WarpSum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Sum over a block of kThreads (a multiple of 32); every thread gets the total.
template <int kThreads>
__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  v = WarpSum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  __syncthreads();  // partial may be reused by a later call
  return total;
}

}  // namespace arbor::kernels
