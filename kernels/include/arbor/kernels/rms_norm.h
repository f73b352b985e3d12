// RMSNorm as Mixtral defines it: out = x / sqrt(mean(x^2) + eps) * weight, computed in f32.
#pragma once

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"

namespace arbor::kernels {

struct RmsNormParams {
  const float* x = nullptr;       // [n_rows, dim], rows `x_stride` floats apart; not owned
  const float* weight = nullptr;  // [dim]; not owned
  float* out = nullptr;           // [n_rows, dim], dense; may alias x when x_stride == dim
  int n_rows = 0;
  int dim = 0;
  int x_stride = 0;  // 0 means dim
  float eps = 1e-5f;

  absl::Status Validate() const;
};

void RmsNormCpu(const RmsNormParams& p);
// The same on the GPU: every pointer in `p` is device memory. One block per row, f32 sums.
// INVALID_ARGUMENT from Validate, INTERNAL from the launch.
absl::Status RmsNormCuda(const RmsNormParams& p, cudaStream_t stream);

}  // namespace arbor::kernels
