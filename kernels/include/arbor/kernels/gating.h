// Mixtral gating: softmax over all experts in f32, keep the top-k, renormalise them to sum to 1.
// Ties go to the lower expert index.
#pragma once

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"

namespace arbor::kernels {

struct GatingParams {
  const float* logits = nullptr;  // [n_tokens, n_experts] router logits
  int* expert_ids = nullptr;      // [n_tokens, top_k] out, best first
  float* weights = nullptr;       // [n_tokens, top_k] out, renormalised
  int n_tokens = 0;
  int n_experts = 0;
  int top_k = 0;

  absl::Status Validate() const;
};

void GatingCpu(const GatingParams& p);
// The same on the GPU (device pointers): one warp per token, same tie rule.
absl::Status GatingCuda(const GatingParams& p, cudaStream_t stream);

}  // namespace arbor::kernels
