#include "arbor/kernels/rope.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace arbor::kernels {

RopeTable::RopeTable(int head_dim, float theta, int max_positions)
    : head_dim_(head_dim), half_(head_dim / 2), max_positions_(max_positions) {
  cos_.resize(static_cast<size_t>(max_positions) * half_);
  sin_.resize(cos_.size());
  for (int pos = 0; pos < max_positions; ++pos) {
    for (int i = 0; i < half_; ++i) {
      const double inv_freq = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
      const double angle = pos * inv_freq;
      cos_[static_cast<size_t>(pos) * half_ + i] = static_cast<float>(std::cos(angle));
      sin_[static_cast<size_t>(pos) * half_ + i] = static_cast<float>(std::sin(angle));
    }
  }
}

absl::Status RopeParams::Validate() const {
  if (x == nullptr || positions == nullptr || table == nullptr) {
    return absl::InvalidArgumentError("rope: x, positions and table must be set");
  }
  if (n_tokens < 0 || n_heads <= 0 || row_stride < n_heads * table->head_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope: bad shape n_tokens=", n_tokens, " n_heads=", n_heads, " row_stride=", row_stride));
  }
  for (int t = 0; t < n_tokens; ++t) {
    if (positions[t] < 0 || positions[t] >= table->max_positions()) {
      return absl::OutOfRangeError(absl::StrCat("rope: position ", positions[t], " outside [0, ",
                                                table->max_positions(), ")"));
    }
  }
  return absl::OkStatus();
}

void RopeCpu(const RopeParams& p) {
  const int hd = p.table->head_dim(), half = hd / 2;
  for (int t = 0; t < p.n_tokens; ++t) {
    const float* c = p.table->cos(p.positions[t]);
    const float* s = p.table->sin(p.positions[t]);
    for (int h = 0; h < p.n_heads; ++h) {
      float* v = p.x + static_cast<size_t>(t) * p.row_stride + static_cast<size_t>(h) * hd;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace arbor::kernels

namespace arbor::kernels {

absl::Status RopeCudaParams::Validate() const {
  if (x == nullptr || positions == nullptr || cos == nullptr || sin == nullptr) {
    return absl::InvalidArgumentError("rope_cuda: x, positions, cos and sin must be set");
  }
  if (head_dim <= 0 || head_dim % 2 != 0 || max_positions <= 0 || n_tokens < 0 || n_heads <= 0 ||
      row_stride < n_heads * head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("rope_cuda: bad shape head_dim=", head_dim,
                                                   " n_tokens=", n_tokens, " n_heads=", n_heads,
                                                   " row_stride=", row_stride));
  }
  return absl::OkStatus();
}

}  // namespace arbor::kernels
