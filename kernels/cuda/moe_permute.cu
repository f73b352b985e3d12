// MoE permute / gather / unpermute on the GPU. The permute is two launches: one block per
// expert counts its rows, then one block per expert derives its group's offset from the counts
// before it and scatters its rows in token order (a block-wide ballot scan), so the grouping is
// the same as MoePermuteCpu's, bit for bit.
#include <cuda_bf16.h>

#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/moe_permute.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__global__ void CountKernel(MoePermuteParams p) {
  const int e = blockIdx.x, n = p.n_tokens * p.top_k;
  int count = 0;  // the same in every thread
  for (int chunk = 0; chunk < n; chunk += kThreads) {
    const int i = chunk + threadIdx.x;
    count += __syncthreads_count(i < n && p.expert_ids[i] == e);
  }
  if (threadIdx.x == 0) p.expert_counts[e] = count;
}

__device__ __forceinline__ int Padded(int count, int align) {
  return (count + align - 1) / align * align;
}

__global__ void ScatterKernel(MoePermuteParams p) {
  __shared__ int warp_counts[kWarps];
  const int e = blockIdx.x, n = p.n_tokens * p.top_k;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int offset = 0;
  for (int i = 0; i < e; ++i) offset += Padded(p.expert_counts[i], p.row_align);
  const int count = p.expert_counts[e], padded = Padded(count, p.row_align);
  if (threadIdx.x == 0) {
    p.expert_offsets[e] = offset;
    if (e == p.n_experts - 1) p.expert_offsets[e + 1] = offset + padded;
  }
  for (int r = count + threadIdx.x; r < padded; r += kThreads) p.row_token[offset + r] = -1;
  int base = offset;
  for (int chunk = 0; chunk < n; chunk += kThreads) {
    const int i = chunk + threadIdx.x;
    const int id = i < n ? p.expert_ids[i] : -1;
    const bool mine = id == e;
    // Rows with an id out of range belong to no expert's block; expert 0's marks them.
    if (e == 0 && i < n && (id < 0 || id >= p.n_experts)) p.slot_row[i] = -1;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      before += w < warp ? warp_counts[w] : 0;
      total += warp_counts[w];
    }
    if (mine) {
      const int row = base + before + __popc(ballot & ((1u << lane) - 1u));
      p.row_token[row] = i / p.top_k;
      p.slot_row[i] = row;
    }
    base += total;
    __syncthreads();
  }
}

__global__ void GatherRowsKernel(GatherRowsParams p) {
  auto* out = reinterpret_cast<__nv_bfloat16*>(p.out);
  const size_t n = static_cast<size_t>(p.n_rows) * p.dim;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / p.dim, c = i % p.dim;
    const int t = p.row_token[r];
    out[i] =
        __float2bfloat16_rn(t >= 0 && t < p.n_src ? p.x[static_cast<size_t>(t) * p.dim + c] : 0.0f);
  }
}

__global__ void UnpermuteKernel(MoeUnpermuteParams p) {
  const auto* y = reinterpret_cast<const __nv_bfloat16*>(p.y);
  const size_t n = static_cast<size_t>(p.n_tokens) * p.dim;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int t = static_cast<int>(i / p.dim);
    const size_t c = i % p.dim;
    const int begin = p.row_start ? p.row_start[t] : t * p.rows_per_token;
    const int end = p.row_start ? p.row_start[t + 1] : begin + p.rows_per_token;
    float acc = p.out[i];
    for (int j = begin; j < end; ++j) {
      const int r = p.rows[j];
      if (r < 0 || r >= p.n_rows) continue;
      acc += p.weights[j] * __bfloat162float(y[static_cast<size_t>(r) * p.dim + c]);
    }
    p.out[i] = acc;
  }
}

int GridFor(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks == 0 ? 1 : (blocks < 65535 * 8 ? blocks : 65535 * 8));
}

}  // namespace

absl::Status MoePermuteCuda(const MoePermuteParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  CountKernel<<<p.n_experts, kThreads, 0, stream>>>(p);
  if (absl::Status st = LaunchStatus("moe_permute CountKernel"); !st.ok()) return st;
  ScatterKernel<<<p.n_experts, kThreads, 0, stream>>>(p);
  return LaunchStatus("moe_permute ScatterKernel");
}

absl::Status GatherRowsCuda(const GatherRowsParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_rows == 0) return absl::OkStatus();
  GatherRowsKernel<<<GridFor(static_cast<size_t>(p.n_rows) * p.dim), kThreads, 0, stream>>>(p);
  return LaunchStatus("GatherRowsKernel");
}

absl::Status MoeUnpermuteCuda(const MoeUnpermuteParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_tokens == 0) return absl::OkStatus();
  UnpermuteKernel<<<GridFor(static_cast<size_t>(p.n_tokens) * p.dim), kThreads, 0, stream>>>(p);
  return LaunchStatus("UnpermuteKernel");
}

}  // namespace arbor::kernels
