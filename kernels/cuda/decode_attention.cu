// Tree-attention and paged-attention decode over bf16 paged KV, and the log-sum-exp merge of
// their partial states. See decode_attention.h for the contract; the CPU twin is
// DecodeAttentionCpu in kernels/cpu/decode_attention.cc.
#include <cuda_bf16.h>
#include <mma.h>

#include <cfloat>
#include <cstdint>

#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/decode_attention.h"
#include "common.cuh"

namespace arbor::kernels {
namespace {

using bf16 = __nv_bfloat16;
namespace wmma = nvcuda::wmma;

// ---- tree decode: 4 warps, 64 query-head rows (16 per warp), KV tiles of 32 tokens ----------
constexpr int kTreeWarps = 4;
constexpr int kRows = kTreeDecodeRows;  // 16 per warp
constexpr int kTile = 32;               // KV tokens per shared-memory tile
constexpr int kSPitch = kTile + 4;      // floats; wmma float ldm is a multiple of 4
constexpr int kPPitch = kTile + 8;      // bf16; wmma 16-bit ldm is a multiple of 8

struct TreeSmem {
  int qk_pitch, o_pitch;  // bf16 pitch of Q/K/V rows, float pitch of O rows
  size_t q, k, v, s, pr, o, m, l, pos, bytes;
  __host__ __device__ explicit TreeSmem(int d) : qk_pitch(d + 8), o_pitch(d + 4) {
    q = 0;
    k = q + sizeof(bf16) * kRows * qk_pitch;
    v = k + sizeof(bf16) * kTile * qk_pitch;
    s = v + sizeof(bf16) * kTile * qk_pitch;
    pr = s + sizeof(float) * kRows * kSPitch;
    o = pr + sizeof(bf16) * kRows * kPPitch;
    m = o + sizeof(float) * kRows * o_pitch;
    l = m + sizeof(float) * kRows;
    pos = l + sizeof(float) * kRows;
    bytes = pos + sizeof(int) * kRows;
  }
};

// Copies tokens [t0, t0 + kTile) of the item's chunk (kv head g) into ks / vs, zeros past `end`.
__device__ void LoadKvTile(const DecodeAttentionParams& p, int c, int g, int t0, int end, bf16* ks,
                           bf16* vs, int pitch) {
  const int d = p.head_dim, vec_per_row = d / 8;  // 16-byte vectors
  for (int i = threadIdx.x; i < kTile * vec_per_row; i += blockDim.x) {
    const int j = i / vec_per_row, col = (i % vec_per_row) * 8, t = t0 + j;
    uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
    if (t < end) {
      const int b = p.chunks.block_start[c] + t / p.block_tokens;
      const size_t off = g * p.head_stride + static_cast<size_t>(t % p.block_tokens) * d + col;
      kv = *reinterpret_cast<const uint4*>(p.block_k[b] + off);
      vv = *reinterpret_cast<const uint4*>(p.block_v[b] + off);
    }
    *reinterpret_cast<uint4*>(ks + j * pitch + col) = kv;
    *reinterpret_cast<uint4*>(vs + j * pitch + col) = vv;
  }
}

__global__ void __launch_bounds__(32 * kTreeWarps) TreeDecodeKernel(DecodeAttentionParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const TreeSmem lay(p.head_dim);
  bf16* qs = reinterpret_cast<bf16*>(smem + lay.q);
  bf16* ks = reinterpret_cast<bf16*>(smem + lay.k);
  bf16* vs = reinterpret_cast<bf16*>(smem + lay.v);
  float* ss = reinterpret_cast<float*>(smem + lay.s);
  bf16* ps = reinterpret_cast<bf16*>(smem + lay.pr);
  float* os = reinterpret_cast<float*>(smem + lay.o);
  float* row_m = reinterpret_cast<float*>(smem + lay.m);
  float* row_l = reinterpret_cast<float*>(smem + lay.l);
  int* row_pos = reinterpret_cast<int*>(smem + lay.pos);

  const DecodeItem item = p.items[blockIdx.x];
  const int g = blockIdx.y, c = item.chunk, d = p.head_dim, r = p.n_heads / p.n_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qp = lay.qk_pitch, op = lay.o_pitch;
  const int n_valid = item.q_count * r;  // rows in use

  // Rows: row i = (local query i / r, head g * r + i % r). Q pre-scaled, rounded to bf16.
  for (int i = threadIdx.x; i < kRows * d; i += blockDim.x) {
    const int row = i / d, col = i % d;
    float v = 0;
    if (row < n_valid) {
      const int qrow = p.chunks.queries[p.chunks.query_start[c] + item.q_begin + row / r];
      v = p.q[static_cast<size_t>(qrow) * p.q_row_stride + (g * r + row % r) * d + col] * p.scale;
    }
    qs[row * qp + col] = __float2bfloat16_rn(v);
    os[row * op + col] = 0.0f;
  }
  for (int row = threadIdx.x; row < kRows; row += blockDim.x) {
    row_m[row] = -FLT_MAX;
    row_l[row] = 0.0f;
    row_pos[row] = row < n_valid
                       ? p.q_pos[p.chunks.queries[p.chunks.query_start[c] + item.q_begin + row / r]]
                       : -1;
  }
  const bool warp_active = warp * 16 < n_valid;
  const int base = p.chunks.start[c];

  for (int t0 = item.tok_begin; t0 < item.tok_end; t0 += kTile) {
    __syncthreads();  // previous tile fully consumed; Q/O initialised
    LoadKvTile(p, c, g, t0, item.tok_end, ks, vs, qp);
    __syncthreads();
    if (!warp_active) continue;
    // S[16 rows, 32 tokens] = Q K^T.
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
      wmma::fill_fragment(acc[0], 0.0f);
      wmma::fill_fragment(acc[1], 0.0f);
      for (int kd = 0; kd < d; kd += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::load_matrix_sync(a, qs + warp * 16 * qp + kd, qp);
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
          wmma::load_matrix_sync(b, ks + n * 16 * qp + kd, qp);
          wmma::mma_sync(acc[n], a, b, acc[n]);
        }
      }
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        wmma::store_matrix_sync(ss + warp * 16 * kSPitch + n * 16, acc[n], kSPitch,
                                wmma::mem_row_major);
      }
    }
    __syncwarp();
    // Online softmax: two lanes per row, 16 tokens each.
    {
      const int row = warp * 16 + lane / 2, half = lane % 2;
      const int pos = row_pos[row];
      float sv[16];
      float mx = -FLT_MAX;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int t = t0 + half * 16 + j;
        const bool live = t < item.tok_end && base + t <= pos;
        sv[j] = live ? ss[row * kSPitch + half * 16 + j] : -FLT_MAX;
        mx = fmaxf(mx, sv[j]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = row_m[row];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const float e = sv[j] == -FLT_MAX ? 0.0f : __expf(sv[j] - m_new);
        sum += e;
        ps[row * kPPitch + half * 16 + j] = __float2bfloat16_rn(e);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      const float alpha = m_old == -FLT_MAX ? 0.0f : __expf(m_old - m_new);
      for (int col = half * (d / 2); col < (half + 1) * (d / 2); ++col) os[row * op + col] *= alpha;
      __syncwarp();
      if (half == 0) {
        row_m[row] = m_new;
        row_l[row] = row_l[row] * alpha + sum;
      }
    }
    __syncwarp();
    // O[16 rows, d] += P[16, 32] V[32, d].
    for (int dn = 0; dn < d; dn += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + warp * 16 * op + dn, op, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
        wmma::load_matrix_sync(a, ps + warp * 16 * kPPitch + kk * 16, kPPitch);
        wmma::load_matrix_sync(b, vs + kk * 16 * qp + dn, qp);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(os + warp * 16 * op + dn, acc, op, wmma::mem_row_major);
    }
  }
  __syncthreads();
  // Partial states of the valid rows.
  for (int i = threadIdx.x; i < n_valid * d; i += blockDim.x) {
    const int row = i / d, col = i % d;
    const size_t sh = static_cast<size_t>(item.slot + row / r) * p.n_heads + g * r + row % r;
    p.partial_o[sh * d + col] = os[row * op + col];
    if (col == 0) {
      const bool any = row_l[row] > 0.0f;
      p.partial_m[sh] = any ? row_m[row] : -INFINITY;
      p.partial_l[sh] = any ? row_l[row] : 0.0f;
    }
  }
}

// ---- paged decode: one query per item; each warp takes every 4th token -------------------
constexpr int kPagedWarps = 4;
constexpr int kMaxGroup = 8;    // query heads per kv head
constexpr int kMaxPerLane = 8;  // head_dim / 32

// kPerLane = head_dim / 32 columns per lane; kGroup = query heads per kv head. Both are
// template parameters so that every per-head array stays in registers.
template <int kPerLane, int kGroup>
__global__ void __launch_bounds__(32 * kPagedWarps) PagedDecodeKernel(DecodeAttentionParams p) {
  __shared__ float red_m[kPagedWarps][kGroup];
  __shared__ float red_l[kPagedWarps][kGroup];
  extern __shared__ __align__(16) float red_o[];  // [kPagedWarps, r, head_dim]
  const DecodeItem item = p.items[blockIdx.x];
  constexpr int r = kGroup;
  const int g = blockIdx.y, c = item.chunk, d = p.head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qrow = p.chunks.queries[p.chunks.query_start[c] + item.q_begin];
  const int pos = p.q_pos[qrow], base = p.chunks.start[c];
  const int col0 = lane * kPerLane;  // this lane's columns [col0, col0 + kPerLane)

  float q[kGroup][kPerLane], o[kGroup][kPerLane], m[kGroup], l[kGroup];
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    m[h] = -FLT_MAX;
    l[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      o[h][i] = 0.0f;
      q[h][i] = __bfloat162float(__float2bfloat16_rn(
          p.q[static_cast<size_t>(qrow) * p.q_row_stride + (g * r + h) * d + col0 + i] * p.scale));
    }
  }
  const int end = min(item.tok_end, pos - base + 1);
  for (int t = item.tok_begin + warp; t < end; t += kPagedWarps) {
    const int b = p.chunks.block_start[c] + t / p.block_tokens;
    const size_t off = g * p.head_stride + static_cast<size_t>(t % p.block_tokens) * d + col0;
    // Raw bf16 bits: reinterpret, never convert the integer (that would be a numeric cast).
    const bf16* kb = reinterpret_cast<const bf16*>(p.block_k[b]) + off;
    const bf16* vb = reinterpret_cast<const bf16*>(p.block_v[b]) + off;
    float k[kPerLane], v[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      k[i] = __bfloat162float(kb[i]);
      v[i] = __bfloat162float(vb[i]);
    }
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float dot = 0;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) dot += q[h][i] * k[i];
      dot = WarpSum(dot);
      const float m_new = fmaxf(m[h], dot);
      const float alpha = m[h] == -FLT_MAX ? 0.0f : __expf(m[h] - m_new);
      const float e = __expf(dot - m_new);
      const float pe = __bfloat162float(__float2bfloat16_rn(e));
      l[h] = l[h] * alpha + e;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) o[h][i] = o[h][i] * alpha + pe * v[i];
      m[h] = m_new;
    }
  }
  // Merge the warps.
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    if (lane == 0) {
      red_m[warp][h] = m[h];
      red_l[warp][h] = l[h];
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) red_o[(warp * r + h) * d + col0 + i] = o[h][i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < r * d; i += blockDim.x) {
    const int h = i / d, col = i % d;
    float mx = -FLT_MAX;
    for (int w = 0; w < kPagedWarps; ++w) mx = fmaxf(mx, red_m[w][h]);
    float lsum = 0, osum = 0;
    for (int w = 0; w < kPagedWarps; ++w) {
      if (red_l[w][h] == 0.0f) continue;
      const float s = __expf(red_m[w][h] - mx);
      lsum += red_l[w][h] * s;
      osum += red_o[(w * r + h) * d + col] * s;
    }
    const size_t sh = static_cast<size_t>(item.slot) * p.n_heads + g * r + h;
    p.partial_o[sh * d + col] = osum;
    if (col == 0) {
      p.partial_m[sh] = lsum > 0.0f ? mx : -INFINITY;
      p.partial_l[sh] = lsum;
    }
  }
}

template <int kPerLane>
absl::Status LaunchPaged(const DecodeAttentionParams& p, int group, dim3 grid, size_t smem,
                         cudaStream_t stream) {
  switch (group) {
    case 1:
      PagedDecodeKernel<kPerLane, 1><<<grid, 32 * kPagedWarps, smem, stream>>>(p);
      break;
    case 2:
      PagedDecodeKernel<kPerLane, 2><<<grid, 32 * kPagedWarps, smem, stream>>>(p);
      break;
    case 4:
      PagedDecodeKernel<kPerLane, 4><<<grid, 32 * kPagedWarps, smem, stream>>>(p);
      break;
    case 8:
      PagedDecodeKernel<kPerLane, 8><<<grid, 32 * kPagedWarps, smem, stream>>>(p);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("paged_decode: ", group, " query heads per kv head not in {1, 2, 4, 8}"));
  }
  return LaunchStatus("PagedDecodeKernel");
}

absl::Status LaunchPagedFor(const DecodeAttentionParams& p, int group, dim3 grid, size_t smem,
                            cudaStream_t stream) {
  switch (p.head_dim / 32) {
    case 1:
      return LaunchPaged<1>(p, group, grid, smem, stream);
    case 2:
      return LaunchPaged<2>(p, group, grid, smem, stream);
    case 4:
      return LaunchPaged<4>(p, group, grid, smem, stream);
    case 8:
      return LaunchPaged<8>(p, group, grid, smem, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("paged_decode: head_dim ", p.head_dim, " not in {32, 64, 128, 256}"));
  }
}

// ---- merge: one block per query token ------------------------------------------------------
__global__ void MergeKernel(DecodeAttentionParams p) {
  const int t = blockIdx.x, d = p.head_dim;
  const int begin = p.query_slot_start[t], end = p.query_slot_start[t + 1];
  float* out = p.out + static_cast<size_t>(t) * p.n_heads * d;
  for (int i = threadIdx.x; i < p.n_heads * d; i += blockDim.x) {
    const int h = i / d, col = i % d;
    float mx = -INFINITY;
    for (int j = begin; j < end; ++j) {
      mx = fmaxf(mx, p.partial_m[static_cast<size_t>(p.query_slots[j]) * p.n_heads + h]);
    }
    float l = 0, o = 0;
    if (mx != -INFINITY) {
      for (int j = begin; j < end; ++j) {
        const size_t sh = static_cast<size_t>(p.query_slots[j]) * p.n_heads + h;
        if (p.partial_m[sh] == -INFINITY) continue;
        const float w = __expf(p.partial_m[sh] - mx);
        l += p.partial_l[sh] * w;
        o += p.partial_o[sh * d + col] * w;
      }
    }
    out[i] = l > 0.0f ? o / l : 0.0f;
  }
}

absl::Status Merge(const DecodeAttentionParams& p, cudaStream_t stream) {
  if (p.n_tokens == 0) return absl::OkStatus();
  MergeKernel<<<p.n_tokens, 128, 0, stream>>>(p);
  return LaunchStatus("decode_attention MergeKernel");
}

}  // namespace

absl::Status TreeDecodeCuda(const DecodeAttentionParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_items > 0) {
    const TreeSmem lay(p.head_dim);
    ARBOR_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(TreeDecodeKernel,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    static_cast<int>(lay.bytes)));
    TreeDecodeKernel<<<dim3(p.n_items, p.n_kv_heads), 32 * kTreeWarps, lay.bytes, stream>>>(p);
    if (absl::Status st = LaunchStatus("TreeDecodeKernel"); !st.ok()) return st;
  }
  return Merge(p, stream);
}

absl::Status PagedDecodeCuda(const DecodeAttentionParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  const int r = p.n_heads / p.n_kv_heads;
  if (r > kMaxGroup || p.head_dim % 32 != 0 || p.head_dim / 32 > kMaxPerLane) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged_decode: ", r, " query heads per kv head (max ", kMaxGroup,
                     ") or head_dim ", p.head_dim, " (a multiple of 32, <= 256) unsupported"));
  }
  if (p.n_items > 0) {
    const size_t smem = sizeof(float) * kPagedWarps * r * p.head_dim;
    const dim3 grid(p.n_items, p.n_kv_heads);
    if (absl::Status st = LaunchPagedFor(p, r, grid, smem, stream); !st.ok()) return st;
  }
  return Merge(p, stream);
}

}  // namespace arbor::kernels
