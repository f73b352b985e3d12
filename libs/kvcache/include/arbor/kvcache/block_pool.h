// A fixed-capacity pool of KV blocks, allocated once. Not thread-safe: one owner (an engine's
// step loop) allocates and frees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::kvcache {

// Shape of one KV block. A block holds `block_tokens` consecutive tokens of one sequence for
// every layer. Its floats are laid out [layer][kv: 0 = K, 1 = V][kv_head][token][head_dim], so
// that K (or V) of one (layer, kv head) is a dense [block_tokens, head_dim] matrix.
struct KvLayout {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;

  size_t head_stride() const { return static_cast<size_t>(block_tokens) * head_dim; }
  // Floats of one token's KV laid out as [layers, 2, kv_heads, head_dim]: the row of every KV
  // copied in or out of the tree (and over the wire).
  size_t token_floats() const {
    return static_cast<size_t>(num_layers) * 2 * num_kv_heads * head_dim;
  }
  // The shape of n tokens' KV rows: [n, layers, 2, kv_heads, head_dim].
  std::vector<int64_t> TokensShape(int64_t n) const {
    return {n, num_layers, 2, num_kv_heads, head_dim};
  }
  size_t floats_per_block() const {
    return static_cast<size_t>(num_layers) * 2 * num_kv_heads * head_stride();
  }
  // Offset of K (kv = 0) or V (kv = 1) of (layer, kv head 0) inside a block.
  size_t offset(int layer, int kv) const {
    return (static_cast<size_t>(layer) * 2 + kv) * num_kv_heads * head_stride();
  }
  int BlocksFor(int tokens) const { return (tokens + block_tokens - 1) / block_tokens; }
};

class BlockPool {
 public:
  // INVALID_ARGUMENT for a non-positive shape or capacity.
  static absl::StatusOr<std::unique_ptr<BlockPool>> Create(const KvLayout& layout, int capacity);

  // A free block id, or RESOURCE_EXHAUSTED (nothing changes).
  absl::StatusOr<int> Allocate();
  // Returns `block` to the pool. The caller guarantees it is allocated.
  void Free(int block);

  float* data(int block) { return data_.get() + static_cast<size_t>(block) * floats_per_block_; }
  const KvLayout& layout() const { return layout_; }
  int capacity() const { return capacity_; }
  int used() const { return capacity_ - static_cast<int>(free_.size()); }
  int free_blocks() const { return static_cast<int>(free_.size()); }

 private:
  BlockPool(const KvLayout& layout, int capacity);

  KvLayout layout_;
  int capacity_;
  size_t floats_per_block_;
  std::unique_ptr<float[]> data_;  // [capacity, floats_per_block]
  std::vector<int> free_;          // stack of free block ids
};

}  // namespace arbor::kvcache
