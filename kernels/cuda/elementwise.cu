// The small per-row kernels: RMSNorm, RoPE, SwiGLU (f32 and bf16) and Mixtral gating. Each is
// checked against its CPU twin in kernels/cpu by kernels/cuda/kernels_cuda_test.cc.
#include <cuda_bf16.h>

#include <cfloat>

#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/gating.h"
#include "arbor/kernels/rms_norm.h"
#include "arbor/kernels/rope.h"
#include "arbor/kernels/swiglu.h"
#include "common.cuh"

namespace arbor::kernels {
namespace {

constexpr int kNormThreads = 256;

__global__ void RmsNormKernel(RmsNormParams p, int stride) {
  const float* x = p.x + static_cast<size_t>(blockIdx.x) * stride;
  float* out = p.out + static_cast<size_t>(blockIdx.x) * p.dim;
  float ss = 0;
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x) ss += x[i] * x[i];
  ss = BlockSum<kNormThreads>(ss);
  const float inv = rsqrtf(ss / p.dim + p.eps);
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x) out[i] = x[i] * inv * p.weight[i];
}

__global__ void RopeKernel(RopeCudaParams p) {
  const int t = blockIdx.x;
  const int pos = p.positions[t];
  if (pos < 0 || pos >= p.max_positions) return;
  const int half = p.head_dim / 2;
  const float* c = p.cos + static_cast<size_t>(pos) * half;
  const float* s = p.sin + static_cast<size_t>(pos) * half;
  float* row = p.x + static_cast<size_t>(t) * p.row_stride;
  for (int j = threadIdx.x; j < p.n_heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    float* v = row + static_cast<size_t>(h) * p.head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c[i] - b * s[i];
    v[i + half] = b * c[i] + a * s[i];
  }
}

__device__ __forceinline__ float Silu(float a) { return a / (1.0f + __expf(-a)); }

__global__ void SwiGluKernel(SwiGluParams p) {
  const size_t n = static_cast<size_t>(p.n_rows) * p.dim;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / p.dim, c = i % p.dim;
    const float* a = p.gate_up + r * 2 * p.dim;
    p.out[i] = Silu(a[c]) * a[c + p.dim];
  }
}

__global__ void SwiGluBf16Kernel(SwiGluBf16Params p) {
  const auto* in = reinterpret_cast<const __nv_bfloat16*>(p.gate_up);
  auto* out = reinterpret_cast<__nv_bfloat16*>(p.out);
  const size_t n = static_cast<size_t>(p.n_rows) * p.dim;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / p.dim, c = i % p.dim;
    const __nv_bfloat16* a = in + r * 2 * p.dim;
    out[i] = __float2bfloat16_rn(Silu(__bfloat162float(a[c])) * __bfloat162float(a[c + p.dim]));
  }
}

// One warp per token. Lane l holds experts l, l + 32, ...; top-k by k rounds of a warp argmax
// (ties to the lower index, as the CPU reference).
constexpr int kMaxExpertsPerLane = 8;  // 256 experts

__global__ void GatingKernel(GatingParams p) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (warp >= p.n_tokens) return;
  const float* l = p.logits + static_cast<size_t>(warp) * p.n_experts;
  float prob[kMaxExpertsPerLane];
  float mx = -FLT_MAX;
#pragma unroll
  for (int j = 0; j < kMaxExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    prob[j] = e < p.n_experts ? l[e] : -FLT_MAX;
    mx = fmaxf(mx, prob[j]);
  }
  mx = WarpMax(mx);
  float sum = 0;
#pragma unroll
  for (int j = 0; j < kMaxExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    prob[j] = e < p.n_experts ? expf(prob[j] - mx) : 0.0f;
    sum += prob[j];
  }
  sum = WarpSum(sum);
#pragma unroll
  for (int j = 0; j < kMaxExpertsPerLane; ++j) prob[j] /= sum;
  unsigned taken = 0;  // bit j: expert lane + 32 j already chosen
  float kept = 0;
  int* ids = p.expert_ids + static_cast<size_t>(warp) * p.top_k;
  float* w = p.weights + static_cast<size_t>(warp) * p.top_k;
  for (int k = 0; k < p.top_k; ++k) {
    float best = -1.0f;
    int best_e = INT_MAX;
#pragma unroll
    for (int j = 0; j < kMaxExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < p.n_experts && !(taken >> j & 1u) && prob[j] > best) {
        best = prob[j];
        best_e = e;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, off);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, off);
      if (ob > best || (ob == best && oe < best_e)) {
        best = ob;
        best_e = oe;
      }
    }
    if (lane == best_e % 32) taken |= 1u << (best_e / 32);
    if (lane == 0) {
      ids[k] = best_e;
      w[k] = best;
    }
    kept += best;
  }
  __syncwarp();
  if (lane < p.top_k) w[lane] /= kept;
}

int GridFor(size_t n, int threads) {
  const size_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks == 0 ? 1 : blocks) : 65535 * 8);
}

}  // namespace

absl::Status RmsNormCuda(const RmsNormParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_rows == 0) return absl::OkStatus();
  RmsNormKernel<<<p.n_rows, kNormThreads, 0, stream>>>(p, p.x_stride == 0 ? p.dim : p.x_stride);
  return LaunchStatus("RmsNormKernel");
}

absl::Status RopeCuda(const RopeCudaParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_tokens == 0) return absl::OkStatus();
  RopeKernel<<<p.n_tokens, 128, 0, stream>>>(p);
  return LaunchStatus("RopeKernel");
}

absl::Status SwiGluCuda(const SwiGluParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_rows == 0) return absl::OkStatus();
  SwiGluKernel<<<GridFor(static_cast<size_t>(p.n_rows) * p.dim, 256), 256, 0, stream>>>(p);
  return LaunchStatus("SwiGluKernel");
}

absl::Status SwiGluBf16Cuda(const SwiGluBf16Params& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_rows == 0) return absl::OkStatus();
  SwiGluBf16Kernel<<<GridFor(static_cast<size_t>(p.n_rows) * p.dim, 256), 256, 0, stream>>>(p);
  return LaunchStatus("SwiGluBf16Kernel");
}

absl::Status GatingCuda(const GatingParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_tokens == 0) return absl::OkStatus();
  constexpr int kWarps = 4;
  GatingKernel<<<(p.n_tokens + kWarps - 1) / kWarps, 32 * kWarps, 0, stream>>>(p);
  return LaunchStatus("GatingKernel");
}

}  // namespace arbor::kernels

// ---- KV write ------------------------------------------------------------------------------
#include "arbor/kernels/kv_write.h"

namespace arbor::kernels {
namespace {

__global__ void KvWriteKernel(KvWriteParams p) {
  const int t = blockIdx.x;
  const float* row = p.qkv + static_cast<size_t>(t) * p.row_stride;
  auto* base = reinterpret_cast<__nv_bfloat16*>(p.blocks) +
               static_cast<size_t>(p.block[t]) * p.block_elems +
               static_cast<size_t>(p.slot[t]) * p.head_dim;
  for (int i = threadIdx.x; i < p.n_kv_heads * p.head_dim; i += blockDim.x) {
    const int g = i / p.head_dim, d = i % p.head_dim;
    base[p.k_offset + g * p.head_stride + d] = __float2bfloat16_rn(row[p.k_col + i]);
    base[p.v_offset + g * p.head_stride + d] = __float2bfloat16_rn(row[p.v_col + i]);
  }
}

// One block per token; its head rows are read in KvLayout::ForEachHeadRow order (kv_layout.h).
__global__ void KvReadKernel(KvReadParams p) {
  const int t = blockIdx.x;
  const auto* base = reinterpret_cast<const __nv_bfloat16*>(p.blocks) +
                     static_cast<size_t>(p.block[t]) * p.block_elems +
                     static_cast<size_t>(p.slot[t]) * p.head_dim;
  const int rows = 2 * p.n_layers * p.n_kv_heads;
  float* out = p.out + static_cast<size_t>(t) * rows * p.head_dim;
  for (int i = threadIdx.x; i < rows * p.head_dim; i += blockDim.x) {
    const int r = i / p.head_dim, d = i % p.head_dim;
    out[i] = __bfloat162float(base[r * p.head_stride + d]);
  }
}

}  // namespace

absl::Status KvReadCuda(const KvReadParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_tokens == 0) return absl::OkStatus();
  KvReadKernel<<<p.n_tokens, 256, 0, stream>>>(p);
  return LaunchStatus("KvReadKernel");
}

absl::Status KvWriteCuda(const KvWriteParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_tokens == 0) return absl::OkStatus();
  KvWriteKernel<<<p.n_tokens, 128, 0, stream>>>(p);
  return LaunchStatus("KvWriteKernel");
}

}  // namespace arbor::kernels
