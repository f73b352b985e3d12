#include "arbor/kernels/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "arbor/common/dtype.h"

namespace arbor::kernels {

DecodePlan PlanDecode(const ChunkView& chunks, int n_tokens, int max_queries, int split_tokens) {
  DecodePlan plan;
  std::vector<std::vector<int>> slots(n_tokens);
  for (int c = 0; c < chunks.n_chunks; ++c) {
    const int nq = chunks.query_start[c + 1] - chunks.query_start[c], len = chunks.len[c];
    for (int q0 = 0; q0 < nq; q0 += max_queries) {
      const int qn = std::min(max_queries, nq - q0);
      for (int t0 = 0; t0 < len; t0 += split_tokens) {
        plan.items.push_back({c, t0, std::min(len, t0 + split_tokens), q0, qn, plan.n_slots});
        for (int i = 0; i < qn; ++i) {
          slots[chunks.queries[chunks.query_start[c] + q0 + i]].push_back(plan.n_slots + i);
        }
        plan.n_slots += qn;
      }
    }
  }
  plan.query_slot_start.push_back(0);
  for (const auto& s : slots) {
    plan.query_slots.insert(plan.query_slots.end(), s.begin(), s.end());
    plan.query_slot_start.push_back(static_cast<int>(plan.query_slots.size()));
  }
  return plan;
}

absl::Status CheckTreeDecodeShape(int n_heads, int n_kv_heads, int head_dim) {
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 ||
      n_heads / n_kv_heads > kTreeDecodeRows || head_dim <= 0 || head_dim % 16 != 0 ||
      head_dim > kMaxDecodeHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode attention cannot tile n_heads=", n_heads, " n_kv_heads=", n_kv_heads,
        " head_dim=", head_dim, ": needs head_dim a multiple of 16 up to ", kMaxDecodeHeadDim,
        " and at most ", kTreeDecodeRows, " query heads per kv head"));
  }
  return absl::OkStatus();
}

DecodePlan PlanTreeDecode(const ChunkView& chunks, int n_tokens, int n_heads, int n_kv_heads) {
  return PlanDecode(chunks, n_tokens, kTreeDecodeRows / (n_heads / n_kv_heads), kDecodeSplitTokens);
}

absl::Status DecodeAttentionParams::Validate() const {
  if (q == nullptr || out == nullptr || q_pos == nullptr || chunks.start == nullptr ||
      chunks.block_start == nullptr || chunks.query_start == nullptr || chunks.queries == nullptr ||
      block_k == nullptr || block_v == nullptr || (n_items > 0 && items == nullptr) ||
      query_slot_start == nullptr || query_slots == nullptr || partial_m == nullptr ||
      partial_l == nullptr || partial_o == nullptr) {
    return absl::InvalidArgumentError("decode_attention: a pointer is not set");
  }
  if (absl::Status tile = CheckTreeDecodeShape(n_heads, n_kv_heads, head_dim); !tile.ok()) {
    return tile;
  }
  if (n_tokens < 0 || q_row_stride < n_heads * head_dim || block_tokens <= 0 ||
      head_stride % 8 != 0 || head_stride < static_cast<size_t>(block_tokens) * head_dim ||
      n_items < 0 || n_slots < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode_attention: bad shape n_tokens=", n_tokens,
                     " q_row_stride=", q_row_stride, " block_tokens=", block_tokens,
                     " head_stride=", head_stride, " (a multiple of 8: 16-byte loads)"));
  }
  return absl::OkStatus();
}

void DecodeAttentionCpu(const DecodeAttentionParams& p) {
  const int r = p.n_heads / p.n_kv_heads, d = p.head_dim;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> s;
  for (int it = 0; it < p.n_items; ++it) {
    const DecodeItem& item = p.items[it];
    const int c = item.chunk;
    for (int lq = 0; lq < item.q_count; ++lq) {
      const int qrow = p.chunks.queries[p.chunks.query_start[c] + item.q_begin + lq];
      const int slot = item.slot + lq;
      for (int h = 0; h < p.n_heads; ++h) {
        const int g = h / r;
        const float* qv = p.q + static_cast<size_t>(qrow) * p.q_row_stride + h * d;
        float m = kNegInf;
        s.assign(item.tok_end - item.tok_begin, kNegInf);
        for (int t = item.tok_begin; t < item.tok_end; ++t) {
          if (p.chunks.start[c] + t > p.q_pos[qrow]) continue;
          const int b = p.chunks.block_start[c] + t / p.block_tokens;
          const bf16_t* k =
              p.block_k[b] + g * p.head_stride + static_cast<size_t>(t % p.block_tokens) * d;
          float dot = 0;
          for (int i = 0; i < d; ++i) {
            dot += BF16ToF32(F32ToBF16(qv[i] * p.scale)) * BF16ToF32(k[i]);
          }
          s[t - item.tok_begin] = dot;
          m = std::max(m, dot);
        }
        float l = 0;
        float* o = p.partial_o + (static_cast<size_t>(slot) * p.n_heads + h) * d;
        std::fill(o, o + d, 0.0f);
        for (int t = item.tok_begin; t < item.tok_end && m != kNegInf; ++t) {
          const float sv = s[t - item.tok_begin];
          if (sv == kNegInf) continue;
          const float e = std::exp(sv - m);
          l += e;
          const float pe = BF16ToF32(F32ToBF16(e));
          const int b = p.chunks.block_start[c] + t / p.block_tokens;
          const bf16_t* v =
              p.block_v[b] + g * p.head_stride + static_cast<size_t>(t % p.block_tokens) * d;
          for (int i = 0; i < d; ++i) o[i] += pe * BF16ToF32(v[i]);
        }
        p.partial_m[static_cast<size_t>(slot) * p.n_heads + h] = m;
        p.partial_l[static_cast<size_t>(slot) * p.n_heads + h] = l;
      }
    }
  }
  // Merge: out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M).
  for (int t = 0; t < p.n_tokens; ++t) {
    for (int h = 0; h < p.n_heads; ++h) {
      float mx = kNegInf;
      for (int j = p.query_slot_start[t]; j < p.query_slot_start[t + 1]; ++j) {
        mx = std::max(mx, p.partial_m[static_cast<size_t>(p.query_slots[j]) * p.n_heads + h]);
      }
      float* out = p.out + static_cast<size_t>(t) * p.n_heads * d + h * d;
      std::fill(out, out + d, 0.0f);
      if (mx == kNegInf) continue;
      float l = 0;
      for (int j = p.query_slot_start[t]; j < p.query_slot_start[t + 1]; ++j) {
        const size_t sh = static_cast<size_t>(p.query_slots[j]) * p.n_heads + h;
        if (p.partial_m[sh] == kNegInf) continue;
        const float w = std::exp(p.partial_m[sh] - mx);
        l += p.partial_l[sh] * w;
        for (int i = 0; i < d; ++i) out[i] += p.partial_o[sh * d + i] * w;
      }
      for (int i = 0; i < d; ++i) out[i] /= l;
    }
  }
}

}  // namespace arbor::kernels
