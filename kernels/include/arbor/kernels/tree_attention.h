// Tree attention (CPU reference): causal GQA attention for queries whose KV paths share
// segments. The KV is given as chunks (a segment's prefix: consecutive tokens in paged blocks)
// and, per chunk, the queries that attend to it, i.e. every query whose path runs through it.
// Each chunk's KV is read once per kv head for all of its queries, as GEMMs over the packed
// [queries x heads-in-group, head_dim] matrix; per-query softmax state (running max, sum,
// output) is carried across chunks and merged with log-sum-exp rescaling, so the result equals
// attention over each query's full path. The CUDA twin mirrors this params struct.
//
// Chunk c holds tokens [chunk_start[c], chunk_start[c] + chunk_len[c]) in its blocks: block i of
// the chunk holds tokens chunk_start + i * block_tokens ... (the last block may be partly used);
// inside a block, K of kv head g is a dense [block_tokens, head_dim] matrix at
// block_k[...] + g * head_stride (V likewise). A query at position p sees chunk tokens <= p.
#pragma once

#include <cstddef>

#include "absl/status/status.h"

namespace arbor::kernels {

struct TreeAttentionParams {
  const float* q = nullptr;  // [n_tokens, q_row_stride]; heads [n_heads, head_dim] from col 0
  int q_row_stride = 0;
  float* out = nullptr;        // [n_tokens, n_heads * head_dim]
  const int* q_pos = nullptr;  // [n_tokens] absolute position of each query
  int n_tokens = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0;

  int n_chunks = 0;
  const int* chunk_start = nullptr;        // [n_chunks]
  const int* chunk_len = nullptr;          // [n_chunks]
  const int* chunk_block_start = nullptr;  // [n_chunks + 1] into block_k / block_v
  const float* const* block_k = nullptr;   // not owned
  const float* const* block_v = nullptr;
  int block_tokens = 0;
  size_t head_stride = 0;
  const int* chunk_query_start = nullptr;  // [n_chunks + 1] into chunk_queries
  const int* chunk_queries = nullptr;      // query rows attending to each chunk

  float* workspace = nullptr;  // WorkspaceFloats(...)

  static size_t WorkspaceFloats(int n_tokens, int max_queries_per_chunk, int n_heads,
                                int n_kv_heads, int head_dim, int block_tokens);
  // Shapes, pointers, block counts covering each chunk, query ids in range.
  absl::Status Validate() const;
};

// Every query must see at least one token (its own); queries listed in no chunk output zeros.
void TreeAttentionCpu(const TreeAttentionParams& p);

}  // namespace arbor::kernels
