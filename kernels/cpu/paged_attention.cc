#include "arbor/kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "attend_block.h"

namespace arbor::kernels {

size_t PagedAttentionParams::WorkspaceFloats(int max_queries_per_seq, int n_heads, int n_kv_heads,
                                             int head_dim, int block_tokens) {
  const size_t m = static_cast<size_t>(max_queries_per_seq) * (n_heads / n_kv_heads);
  return m * (2 * static_cast<size_t>(head_dim) + block_tokens + 2);
}

absl::Status PagedAttentionParams::Validate() const {
  if (q == nullptr || out == nullptr || query_start == nullptr || kv_len == nullptr ||
      block_start == nullptr || workspace == nullptr) {
    return absl::InvalidArgumentError("paged_attention: a required pointer is null");
  }
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 ||
      block_tokens <= 0 || q_row_stride < n_heads * head_dim ||
      head_stride < static_cast<size_t>(block_tokens) * head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("paged_attention: bad shape heads=", n_heads,
                                                   " kv_heads=", n_kv_heads, " head_dim=", head_dim,
                                                   " block_tokens=", block_tokens));
  }
  if (query_start[0] != 0 || query_start[n_seqs] != n_tokens) {
    return absl::InvalidArgumentError("paged_attention: query_start must span [0, n_tokens]");
  }
  for (int s = 0; s < n_seqs; ++s) {
    const int m = query_start[s + 1] - query_start[s];
    const int blocks = block_start[s + 1] - block_start[s];
    if (m < 0 || kv_len[s] < m || static_cast<int64_t>(blocks) * block_tokens < kv_len[s] ||
        (kv_len[s] > 0 && static_cast<int64_t>(blocks - 1) * block_tokens >= kv_len[s])) {
      return absl::InvalidArgumentError(absl::StrCat("paged_attention: sequence ", s, " has ", m,
                                                     " queries, kv_len ", kv_len[s], " and ",
                                                     blocks, " blocks of ", block_tokens));
    }
  }
  return absl::OkStatus();
}

void PagedAttentionCpu(const PagedAttentionParams& p) {
  const int r = p.n_heads / p.n_kv_heads, hd = p.head_dim, bt = p.block_tokens;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int s = 0; s < p.n_seqs; ++s) {
    const int q0 = p.query_start[s], n_q = p.query_start[s + 1] - q0;
    if (n_q == 0) continue;
    const int first_pos = p.kv_len[s] - n_q;       // position of this sequence's first query
    const int m = n_q * r;                         // query rows per kv head: (token, head-in-group)
    float* qg = p.workspace;                       // [m, hd]
    float* og = qg + static_cast<size_t>(m) * hd;  // [m, hd]
    float* sc = og + static_cast<size_t>(m) * hd;  // [m, bt]
    float* mx = sc + static_cast<size_t>(m) * bt;  // [m] running max
    float* den = mx + m;                           // [m] running softmax denominator

    for (int g = 0; g < p.n_kv_heads; ++g) {
      for (int t = 0; t < n_q; ++t) {
        const float* src =
            p.q + static_cast<size_t>(q0 + t) * p.q_row_stride + static_cast<size_t>(g) * r * hd;
        float* dst = qg + static_cast<size_t>(t) * r * hd;
        for (int i = 0; i < r * hd; ++i) dst[i] = src[i] * p.scale;
      }
      std::fill(og, og + static_cast<size_t>(m) * hd, 0.0f);
      std::fill(mx, mx + m, kNegInf);
      std::fill(den, den + m, 0.0f);

      const int n_blocks = p.block_start[s + 1] - p.block_start[s];
      for (int b = 0; b < n_blocks; ++b) {
        const int base = b * bt;
        const int valid = std::min(bt, p.kv_len[s] - base);
        if (valid <= 0) break;
        const float* kb = p.block_k[p.block_start[s] + b] + g * p.head_stride;  // [valid, hd]
        const float* vb = p.block_v[p.block_start[s] + b] + g * p.head_stride;  // [valid, hd]
        internal::AttendBlock(qg, m, hd, kb, vb, valid, sc, bt, og, mx, den,
                              [&](int row) { return first_pos + row / r - base + 1; });
      }
      for (int t = 0; t < n_q; ++t) {
        for (int j = 0; j < r; ++j) {
          const int row = t * r + j;
          const float inv = 1.0f / den[row];
          const float* src = og + static_cast<size_t>(row) * hd;
          float* dst = p.out + static_cast<size_t>(q0 + t) * p.n_heads * hd +
                       static_cast<size_t>(g * r + j) * hd;
          for (int i = 0; i < hd; ++i) dst[i] = src[i] * inv;
        }
      }
    }
  }
}

}  // namespace arbor::kernels
