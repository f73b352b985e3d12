// A fixed-capacity pool of KV blocks, allocated once. Not thread-safe: one owner (an engine's
// step loop) allocates and frees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/kernels/kv_layout.h"

namespace arbor::kvcache {

// The block shape (kernels/kv_layout.h), named here as the KV tree's callers know it.
using KvLayout = kernels::KvLayout;

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
