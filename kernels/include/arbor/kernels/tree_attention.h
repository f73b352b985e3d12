// Tree attention (CPU reference): causal GQA attention for queries whose KV paths share
// segments, given as attention chunks (attention_chunks.h). Each chunk's KV is read once per kv
// head for all of its queries, as GEMMs over the packed [queries x heads-in-group, head_dim]
// matrix; per-query softmax state (running max, sum, output) is carried across chunks and merged
// with log-sum-exp rescaling, so the result equals attention over each query's full path. Kv heads
// are independent and run in parallel on the kernels' threads (parallel.h) when a step has enough
// work to share. The CUDA twin mirrors this params struct. block_k / block_v list the chunks'
// blocks in chunk order, each pointing at the layer's K / V head block of kv head 0
// (KvLayout::offset(layer, kv), kv_layout.h).
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "arbor/kernels/attention_chunks.h"

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

  ChunkView chunks;                       // block_start indexes block_k / block_v
  const float* const* block_k = nullptr;  // not owned
  const float* const* block_v = nullptr;
  int block_tokens = 0;
  size_t head_stride = 0;  // KvLayout::head_stride()

  float* workspace = nullptr;  // WorkspaceFloats(...)

  // The softmax state of every (query, head) and one chunk workspace per kv head (kv heads run
  // in parallel on the kernels' threads, parallel.h).
  static size_t WorkspaceFloats(int n_tokens, int max_queries_per_chunk, int n_heads,
                                int n_kv_heads, int head_dim, int block_tokens);
  // One kv head's chunk workspace.
  static size_t GroupWorkspaceFloats(int max_queries_per_chunk, int heads_per_group, int head_dim,
                                     int block_tokens);
  // Shapes, pointers, block counts covering each chunk, query ids in range.
  absl::Status Validate() const;
};

// Every query must see at least one token (its own); queries listed in no chunk output zeros.
void TreeAttentionCpu(const TreeAttentionParams& p);

}  // namespace arbor::kernels
