// Causal grouped-query attention of new tokens over a paged KV cache (CPU reference; the GPU
// twin and the tree-attention variant follow the same params shape).
//
// KV of one layer lives in fixed-size blocks of `block_tokens` tokens laid out as KvLayout
// (kv_layout.h) says; block_k[b] / block_v[b] point at the layer's K / V of kv head 0. A
// sequence's blocks are listed in position order; its last block may be
// partly filled. Query i of a sequence with m new queries and kv_len tokens of KV (the new tokens
// included) sits at position kv_len - m + i and attends to positions [0, that position].
//
// Per (sequence, kv head) the kernel packs the r = n_heads / n_kv_heads query heads of all the
// sequence's queries into one [m * r, head_dim] matrix, so each block is read once for all of
// them: S = Q K_b^T and O += P V_b are GEMMs, merged across blocks with an online softmax.
#pragma once

#include <cstddef>

#include "absl/status/status.h"

namespace arbor::kernels {

struct PagedAttentionParams {
  const float* q = nullptr;  // [n_tokens, q_row_stride]; heads [n_heads, head_dim] from col 0
  int q_row_stride = 0;
  float* out = nullptr;  // [n_tokens, n_heads * head_dim]
  int n_tokens = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0;  // usually 1 / sqrt(head_dim)

  int n_seqs = 0;
  const int* query_start = nullptr;  // [n_seqs + 1]: seq s owns rows [query_start[s], [s + 1])
  const int* kv_len = nullptr;       // [n_seqs]
  const int* block_start = nullptr;  // [n_seqs + 1]: seq s owns blocks [block_start[s], [s + 1])
  const float* const* block_k = nullptr;  // [total blocks]; not owned
  const float* const* block_v = nullptr;  // [total blocks]; not owned
  int block_tokens = 0;
  size_t head_stride = 0;  // floats between kv heads inside a block

  float* workspace = nullptr;  // WorkspaceFloats(max queries of one sequence, ...) floats

  // Floats of workspace needed when no sequence has more than `max_queries_per_seq` queries.
  static size_t WorkspaceFloats(int max_queries_per_seq, int n_heads, int n_kv_heads, int head_dim,
                                int block_tokens);

  // Checks pointers, shapes and that every sequence's blocks cover its kv_len.
  absl::Status Validate() const;
};

void PagedAttentionCpu(const PagedAttentionParams& p);

}  // namespace arbor::kernels
