// Rotary position embedding in the Hugging Face convention ("rotate half"): element i of a head
// pairs with element i + head_dim/2, rotated by angle pos * theta^(-2i/head_dim).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"

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

// RoPE on the GPU: the table's cos/sin copied to device memory ([max_positions, head_dim / 2]
// each, as RopeTable lays them out). Positions are device memory and are not read on the host:
// the caller checks them (RopeParams::Validate does on the host copy); a position outside
// [0, max_positions) leaves its row unrotated.
struct RopeCudaParams {
  float* x = nullptr;              // [n_tokens, row_stride]; heads [n_heads, head_dim] from col 0
  const int* positions = nullptr;  // [n_tokens]
  const float* cos = nullptr;      // [max_positions, head_dim / 2]
  const float* sin = nullptr;      // [max_positions, head_dim / 2]
  int head_dim = 0;
  int max_positions = 0;
  int n_tokens = 0;
  int n_heads = 0;
  int row_stride = 0;

  absl::Status Validate() const;
};

absl::Status RopeCuda(const RopeCudaParams& p, cudaStream_t stream);

}  // namespace arbor::kernels
