// The SwiGLU activation of a Mixtral expert: out = silu(a) * b, where each input row holds the
// w1 projection `a` followed by the w3 projection `b` (one GEMM against [w1; w3]).
#pragma once

#include "absl/status/status.h"

namespace arbor::kernels {

struct SwiGluParams {
  const float* gate_up = nullptr;  // [n_rows, 2 * dim]: a = cols [0, dim), b = cols [dim, 2 dim)
  float* out = nullptr;            // [n_rows, dim]
  int n_rows = 0;
  int dim = 0;

  absl::Status Validate() const;
};

void SwiGluCpu(const SwiGluParams& p);

}  // namespace arbor::kernels
