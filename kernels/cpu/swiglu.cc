#include "arbor/kernels/swiglu.h"

#include <cmath>

#include "arbor/common/dtype.h"

namespace arbor::kernels {

absl::Status SwiGluParams::Validate() const {
  if (gate_up == nullptr || out == nullptr || n_rows < 0 || dim <= 0) {
    return absl::InvalidArgumentError("swiglu: gate_up and out must be set, dim > 0");
  }
  return absl::OkStatus();
}

void SwiGluCpu(const SwiGluParams& p) {
  for (int r = 0; r < p.n_rows; ++r) {
    const float* a = p.gate_up + static_cast<size_t>(r) * 2 * p.dim;
    const float* b = a + p.dim;
    float* o = p.out + static_cast<size_t>(r) * p.dim;
    for (int i = 0; i < p.dim; ++i) o[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
  }
}

}  // namespace arbor::kernels

namespace arbor::kernels {

absl::Status SwiGluBf16Params::Validate() const {
  if (gate_up == nullptr || out == nullptr || n_rows < 0 || dim <= 0) {
    return absl::InvalidArgumentError("swiglu_bf16: gate_up and out must be set, dim > 0");
  }
  return absl::OkStatus();
}

void SwiGluBf16Cpu(const SwiGluBf16Params& p) {
  for (int r = 0; r < p.n_rows; ++r) {
    const bf16_t* a = p.gate_up + static_cast<size_t>(r) * 2 * p.dim;
    const bf16_t* b = a + p.dim;
    bf16_t* o = p.out + static_cast<size_t>(r) * p.dim;
    for (int i = 0; i < p.dim; ++i) {
      const float av = BF16ToF32(a[i]);
      o[i] = F32ToBF16(av / (1.0f + std::exp(-av)) * BF16ToF32(b[i]));
    }
  }
}

}  // namespace arbor::kernels
