// The SwiGLU activation of a Mixtral expert: out = silu(a) * b, where each input row holds the
// w1 projection `a` followed by the w3 projection `b` (one GEMM against [w1; w3]).
#pragma once

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"

namespace arbor::kernels {

struct SwiGluParams {
  const float* gate_up = nullptr;  // [n_rows, 2 * dim]: a = cols [0, dim), b = cols [dim, 2 dim)
  float* out = nullptr;            // [n_rows, dim]
  int n_rows = 0;
  int dim = 0;

  absl::Status Validate() const;
};

void SwiGluCpu(const SwiGluParams& p);
// The same on the GPU over device f32 buffers.
absl::Status SwiGluCuda(const SwiGluParams& p, cudaStream_t stream);

// The bf16 form the GPU expert FFN uses: bf16 in, f32 math, bf16 out (round to nearest even).
struct SwiGluBf16Params {
  const bf16_t* gate_up = nullptr;  // [n_rows, 2 * dim]
  bf16_t* out = nullptr;            // [n_rows, dim]
  int n_rows = 0;
  int dim = 0;

  absl::Status Validate() const;
};

void SwiGluBf16Cpu(const SwiGluBf16Params& p);
absl::Status SwiGluBf16Cuda(const SwiGluBf16Params& p, cudaStream_t stream);

}  // namespace arbor::kernels
