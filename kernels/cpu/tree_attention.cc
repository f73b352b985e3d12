#include "arbor/kernels/tree_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "arbor/kernels/parallel.h"
#include "attend_block.h"

namespace arbor::kernels {

size_t TreeAttentionParams::WorkspaceFloats(int n_tokens, int max_queries_per_chunk, int n_heads,
                                            int n_kv_heads, int head_dim, int block_tokens) {
  const size_t acc = static_cast<size_t>(n_tokens) * n_heads * (head_dim + 2);
  return acc + n_kv_heads * GroupWorkspaceFloats(max_queries_per_chunk, n_heads / n_kv_heads,
                                                 head_dim, block_tokens);
}

size_t TreeAttentionParams::GroupWorkspaceFloats(int max_queries_per_chunk, int heads_per_group,
                                                 int head_dim, int block_tokens) {
  const size_t m = static_cast<size_t>(max_queries_per_chunk) * heads_per_group;
  return m * (2 * static_cast<size_t>(head_dim) + block_tokens + 2);
}

absl::Status TreeAttentionParams::Validate() const {
  if (q == nullptr || out == nullptr || q_pos == nullptr || workspace == nullptr ||
      (chunks.n_chunks > 0 &&
       (chunks.start == nullptr || chunks.len == nullptr || chunks.block_start == nullptr ||
        chunks.query_start == nullptr || chunks.queries == nullptr))) {
    return absl::InvalidArgumentError("tree_attention: a required pointer is null");
  }
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 ||
      block_tokens <= 0 || q_row_stride < n_heads * head_dim ||
      head_stride < static_cast<size_t>(block_tokens) * head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("tree_attention: bad shape heads=", n_heads,
                                                   " kv_heads=", n_kv_heads,
                                                   " head_dim=", head_dim));
  }
  const ChunkView& ch = chunks;
  for (int c = 0; c < ch.n_chunks; ++c) {
    const int blocks = ch.block_start[c + 1] - ch.block_start[c];
    if (ch.len[c] < 0 || ch.start[c] < 0 ||
        static_cast<int64_t>(blocks) * block_tokens < ch.len[c] ||
        (ch.len[c] > 0 && static_cast<int64_t>(blocks - 1) * block_tokens >= ch.len[c])) {
      return absl::InvalidArgumentError(absl::StrCat("tree_attention: chunk ", c, " of ", ch.len[c],
                                                     " tokens has ", blocks, " blocks"));
    }
    for (int i = ch.query_start[c]; i < ch.query_start[c + 1]; ++i) {
      if (ch.queries[i] < 0 || ch.queries[i] >= n_tokens) {
        return absl::InvalidArgumentError(
            absl::StrCat("tree_attention: chunk ", c, " lists query ", ch.queries[i]));
      }
    }
  }
  return absl::OkStatus();
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// OpenBLAS runs a GEMM of at most this many multiply-adds on the calling thread.
constexpr int64_t kBlasSingleThreadMacs = int64_t{4} << 16;

// Kv head g over every chunk: its query heads' softmax state lives in acc_* and is touched by no
// other kv head, so kv heads run in parallel, each in its own slice of the chunk workspace.
void AttendGroup(const TreeAttentionParams& p, int g, float* acc_o, float* acc_m, float* acc_l,
                 float* ws) {
  const int r = p.n_heads / p.n_kv_heads, hd = p.head_dim, bt = p.block_tokens;
  for (int c = 0; c < p.chunks.n_chunks; ++c) {
    const int* queries = p.chunks.queries + p.chunks.query_start[c];
    const int n_q = p.chunks.query_start[c + 1] - p.chunks.query_start[c];
    if (n_q == 0 || p.chunks.len[c] == 0) continue;
    const int m = n_q * r;                         // rows: (query, head in group)
    float* qg = ws;                                // [m, hd]
    float* og = qg + static_cast<size_t>(m) * hd;  // [m, hd]
    float* sc = og + static_cast<size_t>(m) * hd;  // [m, bt]
    float* mx = sc + static_cast<size_t>(m) * bt;  // [m]
    float* den = mx + m;                           // [m]
    const int n_blocks = p.chunks.block_start[c + 1] - p.chunks.block_start[c];

    // Gather the group's query heads and their running state.
    for (int i = 0; i < n_q; ++i) {
      const int t = queries[i];
      const float* src =
          p.q + static_cast<size_t>(t) * p.q_row_stride + static_cast<size_t>(g) * r * hd;
      for (int j = 0; j < r; ++j) {
        const int row = i * r + j;
        const size_t a = static_cast<size_t>(t) * p.n_heads + g * r + j;
        for (int d = 0; d < hd; ++d)
          qg[static_cast<size_t>(row) * hd + d] = src[j * hd + d] * p.scale;
        std::copy(acc_o + a * hd, acc_o + (a + 1) * hd, og + static_cast<size_t>(row) * hd);
        mx[row] = acc_m[a];
        den[row] = acc_l[a];
      }
    }
    for (int b = 0; b < n_blocks; ++b) {
      const int base = p.chunks.start[c] + b * bt;  // absolute position of the block's slot 0
      const int valid = std::min(bt, p.chunks.len[c] - b * bt);
      const float* kb = p.block_k[p.chunks.block_start[c] + b] + g * p.head_stride;
      const float* vb = p.block_v[p.chunks.block_start[c] + b] + g * p.head_stride;
      internal::AttendBlock(qg, m, hd, kb, vb, valid, sc, bt, og, mx, den,
                            [&](int row) { return p.q_pos[queries[row / r]] - base + 1; });
    }
    // Scatter the state back.
    for (int i = 0; i < n_q; ++i) {
      for (int j = 0; j < r; ++j) {
        const int row = i * r + j;
        const size_t a = static_cast<size_t>(queries[i]) * p.n_heads + g * r + j;
        std::copy(og + static_cast<size_t>(row) * hd, og + static_cast<size_t>(row + 1) * hd,
                  acc_o + a * hd);
        acc_m[a] = mx[row];
        acc_l[a] = den[row];
      }
    }
  }
}

}  // namespace

void TreeAttentionCpu(const TreeAttentionParams& p) {
  const int r = p.n_heads / p.n_kv_heads, hd = p.head_dim;
  // Per (query, head) softmax state, carried across chunks.
  const size_t n_acc = static_cast<size_t>(p.n_tokens) * p.n_heads;
  float* acc_o = p.workspace;         // [n_tokens * n_heads, hd]
  float* acc_m = acc_o + n_acc * hd;  // [n_tokens * n_heads]
  float* acc_l = acc_m + n_acc;       // [n_tokens * n_heads]
  float* group_ws = acc_l + n_acc;    // n_kv_heads slices
  std::fill(acc_o, acc_o + n_acc * hd, 0.0f);
  std::fill(acc_m, acc_m + n_acc, kNegInf);
  std::fill(acc_l, acc_l + n_acc, 0.0f);

  // Each kv head's slice is sized for the step's largest chunk.
  int max_q = 0;
  int64_t work = 0;  // query rows x KV tokens, over every chunk and head: the multiply-adds / hd
  for (int c = 0; c < p.chunks.n_chunks; ++c) {
    const int n_q = p.chunks.query_start[c + 1] - p.chunks.query_start[c];
    max_q = std::max(max_q, n_q);
    work += static_cast<int64_t>(n_q) * p.n_heads * p.chunks.len[c];
  }
  const size_t slice = TreeAttentionParams::GroupWorkspaceFloats(max_q, r, hd, p.block_tokens);
  // Kv heads in parallel once there is enough to share (about 4M multiply-adds a piece: the
  // threads OpenBLAS leaves spinning after the step's previous GEMM hold the cores for a while,
  // so a smaller piece loses more than it gains; the embedded model's batch-64 decode attends
  // inline), and only while each block's products are small enough that
  // OpenBLAS runs them on the calling thread (at most 4 x 64K multiply-adds, its threshold for
  // threading a GEMM): a prefill chunk's large products are threaded by OpenBLAS instead, and
  // two of our threads calling a threaded OpenBLAS at once fight over the same cores.
  const int64_t per_head = work * hd / p.n_kv_heads;
  const int64_t block_product = static_cast<int64_t>(max_q) * r * p.block_tokens * hd;
  const int grain =
      block_product > kBlasSingleThreadMacs
          ? p.n_kv_heads
          : static_cast<int>(std::clamp<int64_t>(
                (int64_t{4} << 20) / std::max<int64_t>(per_head, 1), 1, p.n_kv_heads));
  ParallelFor(p.n_kv_heads, grain, [&](int begin, int end) {
    for (int g = begin; g < end; ++g) {
      AttendGroup(p, g, acc_o, acc_m, acc_l, group_ws + static_cast<size_t>(g) * slice);
    }
  });
  for (size_t a = 0; a < n_acc; ++a) {
    const float inv = acc_l[a] > 0 ? 1.0f / acc_l[a] : 0.0f;
    float* dst = p.out + a * hd;  // out is [n_tokens, n_heads, hd] = [n_acc, hd]
    for (int d = 0; d < hd; ++d) dst[d] = acc_o[a * hd + d] * inv;
  }
}

}  // namespace arbor::kernels
