// Attention decode on the GPU over bf16 KV in paged blocks, in two forms that share one params
// struct, one work plan and one merge:
//   TreeDecodeCuda   tree attention over attention chunks (attention_chunks.h); each work item
//   loads a range of one chunk's KV into
//                    shared memory once and runs it against up to 64 query heads of that chunk
//                    with bf16 tensor-core MMAs (f32 accumulation, online softmax).
//   PagedDecodeCuda  the per-sequence baseline: one query per chunk (a sequence's own block
//                    table), warp-per-token dot products, KV read once per sequence.
// Both write per-item partial softmax states (running max m, sum l, unnormalised output o) that
// the merge combines per query with log-sum-exp rescaling, as flash-decoding does.
//
// KV blocks are TreeAttentionParams's (KvLayout, kv_layout.h) with bf16 elements. The shapes
// the kernels tile are checked once, by CheckTreeDecodeShape.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"
#include "arbor/kernels/tree_attention.h"

namespace arbor::kernels {

// One unit of work: tokens [tok_begin, tok_end) of `chunk` (chunk-relative) against the
// chunk's queries [q_begin, q_begin + q_count) (indices into its chunk_queries range). Its
// partial states go to slots [slot, slot + q_count).
struct DecodeItem {
  int chunk, tok_begin, tok_end, q_begin, q_count, slot;
};

struct DecodePlan {
  std::vector<DecodeItem> items;
  std::vector<int> query_slot_start;  // [n_tokens + 1] into query_slots
  std::vector<int> query_slots;       // partial slots of each query, chunk order
  int n_slots = 0;
};

// Splits every chunk into items of at most `split_tokens` tokens and `max_queries` queries.
// `chunks` in host memory. A query listed in no chunk gets no slots (output 0).
DecodePlan PlanDecode(const ChunkView& chunks, int n_tokens, int max_queries, int split_tokens);

// The tiling limits of TreeDecodeCuda, stated here only. One item handles kTreeDecodeRows query
// heads (so kTreeDecodeRows / (n_heads / n_kv_heads) queries) and at most kDecodeSplitTokens KV
// tokens; head_dim must be a multiple of 16 and at most kMaxDecodeHeadDim.
inline constexpr int kTreeDecodeRows = 64;
inline constexpr int kDecodeSplitTokens = 256;
inline constexpr int kMaxDecodeHeadDim = 256;

// OK when TreeDecodeCuda can tile this attention shape; INVALID_ARGUMENT saying which limit
// it breaks otherwise.
absl::Status CheckTreeDecodeShape(int n_heads, int n_kv_heads, int head_dim);
// The plan TreeDecodeCuda runs a step's chunks with: PlanDecode at the limits above.
DecodePlan PlanTreeDecode(const ChunkView& chunks, int n_tokens, int n_heads, int n_kv_heads);

struct DecodeAttentionParams {
  const float* q = nullptr;  // [n_tokens, q_row_stride]; heads [n_heads, head_dim] from col 0
  int q_row_stride = 0;
  float* out = nullptr;        // [n_tokens, n_heads * head_dim]
  const int* q_pos = nullptr;  // [n_tokens]
  int n_tokens = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0;

  ChunkView chunks;  // block_start indexes block_k / block_v
  const bf16_t* const* block_k = nullptr;
  const bf16_t* const* block_v = nullptr;
  int block_tokens = 0;
  size_t head_stride = 0;  // elements: KvLayout::head_stride()

  const DecodeItem* items = nullptr;  // the plan, uploaded
  int n_items = 0;
  const int* query_slot_start = nullptr;  // [n_tokens + 1]
  const int* query_slots = nullptr;
  int n_slots = 0;
  float* partial_m = nullptr;  // [n_slots, n_heads] workspace
  float* partial_l = nullptr;  // [n_slots, n_heads]
  float* partial_o = nullptr;  // [n_slots, n_heads, head_dim]

  // Shapes and pointers (device memory is not read).
  absl::Status Validate() const;
};

// The same computation on the CPU, item by item and merged, with the same rounding points
// (queries and probabilities to bf16): what the CUDA kernels are compared with, and the check
// that a plan covers every (query, token) pair once. All pointers host memory.
void DecodeAttentionCpu(const DecodeAttentionParams& p);

absl::Status TreeDecodeCuda(const DecodeAttentionParams& p, cudaStream_t stream);
// Every item must have q_count == 1 (PlanDecode with max_queries 1).
absl::Status PagedDecodeCuda(const DecodeAttentionParams& p, cudaStream_t stream);

}  // namespace arbor::kernels
