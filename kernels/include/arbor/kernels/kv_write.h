// Writes one layer's K and V of a step's new tokens into their KV blocks (bf16), at the
// (block, slot) the KV tree reserved for each token; KvRead packs tokens' KV of every layer
// back out, as the KV tree's token rows. Blocks are laid out as KvLayout (kv_layout.h) says,
// in bf16 elements; k_offset / v_offset are KvLayout::offset(layer, 0 / 1).
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"

namespace arbor::kernels {

struct KvWriteParams {
  const float* qkv = nullptr;  // [n_tokens, row_stride]; K at col k_col, V at col v_col
  int row_stride = 0;
  int k_col = 0;
  int v_col = 0;
  const int* block = nullptr;  // [n_tokens] block id of each token
  const int* slot = nullptr;   // [n_tokens] token slot inside its block
  int n_tokens = 0;
  bf16_t* blocks = nullptr;  // base of the block array
  size_t block_elems = 0;    // elements per block
  size_t k_offset = 0;       // elements from a block's start to this layer's K (head 0)
  size_t v_offset = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  size_t head_stride = 0;  // KvLayout::head_stride()

  absl::Status Validate() const;
};

void KvWriteCpu(const KvWriteParams& p);
absl::Status KvWriteCuda(const KvWriteParams& p, cudaStream_t stream);

// out[t] = the KV of token t (block[t], slot[t]) in every layer, widened to f32: KvLayout's
// token row. Only those bytes move, not whole blocks.
struct KvReadParams {
  const bf16_t* blocks = nullptr;  // base of the block array
  size_t block_elems = 0;          // elements per block
  const int* block = nullptr;      // [n_tokens]
  const int* slot = nullptr;       // [n_tokens]
  int n_tokens = 0;
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  size_t head_stride = 0;  // KvLayout::head_stride()
  float* out = nullptr;    // [n_tokens, KvLayout::token_floats()]

  absl::Status Validate() const;
};

void KvReadCpu(const KvReadParams& p);
absl::Status KvReadCuda(const KvReadParams& p, cudaStream_t stream);

}  // namespace arbor::kernels
