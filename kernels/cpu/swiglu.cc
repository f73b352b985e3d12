#include "arbor/kernels/swiglu.h"

#include <cmath>

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
