#include "arbor/kvcache/block_pool.h"

#include "absl/strings/str_cat.h"

namespace arbor::kvcache {

absl::StatusOr<std::unique_ptr<BlockPool>> BlockPool::Create(const KvLayout& layout, int capacity) {
  if (layout.num_layers <= 0 || layout.num_kv_heads <= 0 || layout.head_dim <= 0 ||
      layout.block_tokens <= 0) {
    return absl::InvalidArgumentError("kv block layout has a non-positive dimension");
  }
  if (capacity <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv block capacity ", capacity, " must be > 0"));
  }
  return std::unique_ptr<BlockPool>(new BlockPool(layout, capacity));
}

BlockPool::BlockPool(const KvLayout& layout, int capacity)
    : layout_(layout),
      capacity_(capacity),
      floats_per_block_(layout.floats_per_block()),
      data_(new float[static_cast<size_t>(capacity) * layout.floats_per_block()]()) {
  free_.reserve(capacity);
  for (int b = capacity - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<int> BlockPool::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv block pool exhausted (", capacity_, " blocks in use)"));
  }
  const int b = free_.back();
  free_.pop_back();
  return b;
}

void BlockPool::Free(int block) { free_.push_back(block); }

}  // namespace arbor::kvcache
