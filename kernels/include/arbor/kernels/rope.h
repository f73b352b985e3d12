// Rotary position embedding in the Hugging Face convention ("rotate half"): element i of a head
// pairs with element i + head_dim/2, rotated by angle pos * theta^(-2i/head_dim).
#pragma once

#include <vector>

#include "absl/status/status.h"

namespace arbor::kernels {

// cos/sin of every (position, frequency) up to max_positions, computed once in double.
// Immutable after construction; thread-safe.
class RopeTable {
 public:
  RopeTable(int head_dim, float theta, int max_positions);
  int head_dim() const { return head_dim_; }
  int max_positions() const { return max_positions_; }
  const float* cos(int pos) const { return cos_.data() + static_cast<size_t>(pos) * half_; }
  const float* sin(int pos) const { return sin_.data() + static_cast<size_t>(pos) * half_; }

 private:
  int head_dim_, half_, max_positions_;
  std::vector<float> cos_;  // [max_positions, head_dim / 2]
  std::vector<float> sin_;  // [max_positions, head_dim / 2]
};

struct RopeParams {
  float* x = nullptr;  // [n_tokens, row_stride]; heads at [n_heads, head_dim] from col 0
  const int* positions = nullptr;  // [n_tokens], each < table->max_positions()
  const RopeTable* table = nullptr;
  int n_tokens = 0;
  int n_heads = 0;
  int row_stride = 0;  // floats between consecutive tokens' rows

  absl::Status Validate() const;
};

// Rotates x in place.
void RopeCpu(const RopeParams& p);

}  // namespace arbor::kernels
