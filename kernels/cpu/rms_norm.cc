#include "arbor/kernels/rms_norm.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace arbor::kernels {

absl::Status RmsNormParams::Validate() const {
  if (x == nullptr || weight == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("rms_norm: x, weight and out must be set");
  }
  if (n_rows < 0 || dim <= 0 || (x_stride != 0 && x_stride < dim)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rms_norm: bad shape n_rows=", n_rows, " dim=", dim, " x_stride=", x_stride));
  }
  return absl::OkStatus();
}

void RmsNormCpu(const RmsNormParams& p) {
  const int stride = p.x_stride == 0 ? p.dim : p.x_stride;
  for (int r = 0; r < p.n_rows; ++r) {
    const float* x = p.x + static_cast<size_t>(r) * stride;
    float* out = p.out + static_cast<size_t>(r) * p.dim;
    double ss =
        0;  // accumulated in double: the result stays within f32 rounding of the exact value
    for (int i = 0; i < p.dim; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / p.dim + p.eps));
    for (int i = 0; i < p.dim; ++i) out[i] = x[i] * inv * p.weight[i];
  }
}

}  // namespace arbor::kernels
