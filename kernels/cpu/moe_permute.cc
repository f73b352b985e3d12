#include "arbor/kernels/moe_permute.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "arbor/common/dtype.h"

namespace arbor::kernels {

absl::Status MoePermuteParams::Validate() const {
  if (expert_ids == nullptr || expert_counts == nullptr || expert_offsets == nullptr ||
      row_token == nullptr || slot_row == nullptr) {
    return absl::InvalidArgumentError("moe_permute: every pointer must be set");
  }
  if (n_tokens < 0 || top_k <= 0 || n_experts <= 0 || row_align <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("moe_permute: bad shape n_tokens=", n_tokens,
                                                   " top_k=", top_k, " n_experts=", n_experts,
                                                   " row_align=", row_align));
  }
  return absl::OkStatus();
}

void MoePermuteCpu(const MoePermuteParams& p) {
  const int n = p.n_tokens * p.top_k;
  std::fill(p.expert_counts, p.expert_counts + p.n_experts, 0);
  for (int i = 0; i < n; ++i) {
    const int e = p.expert_ids[i];
    if (e >= 0 && e < p.n_experts) ++p.expert_counts[e];
  }
  p.expert_offsets[0] = 0;
  for (int e = 0; e < p.n_experts; ++e) {
    const int padded = (p.expert_counts[e] + p.row_align - 1) / p.row_align * p.row_align;
    p.expert_offsets[e + 1] = p.expert_offsets[e] + padded;
  }
  std::fill(p.row_token, p.row_token + p.expert_offsets[p.n_experts], -1);
  std::vector<int> fill(p.expert_offsets, p.expert_offsets + p.n_experts);
  for (int i = 0; i < n; ++i) {
    const int e = p.expert_ids[i];
    if (e < 0 || e >= p.n_experts) {
      p.slot_row[i] = -1;
      continue;
    }
    const int row = fill[e]++;
    p.row_token[row] = i / p.top_k;
    p.slot_row[i] = row;
  }
}

absl::Status GatherRowsParams::Validate() const {
  if (x == nullptr || row_token == nullptr || out == nullptr || n_rows < 0 || n_src < 0 ||
      dim <= 0) {
    return absl::InvalidArgumentError("gather_rows: x, row_token and out must be set, dim > 0");
  }
  return absl::OkStatus();
}

void GatherRowsCpu(const GatherRowsParams& p) {
  for (int r = 0; r < p.n_rows; ++r) {
    bf16_t* o = p.out + static_cast<size_t>(r) * p.dim;
    const int t = p.row_token[r];
    if (t < 0 || t >= p.n_src) {
      std::fill(o, o + p.dim, bf16_t{0});
      continue;
    }
    const float* src = p.x + static_cast<size_t>(t) * p.dim;
    for (int i = 0; i < p.dim; ++i) o[i] = F32ToBF16(src[i]);
  }
}

absl::Status MoeUnpermuteParams::Validate() const {
  if (y == nullptr || rows == nullptr || weights == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("moe_unpermute: y, rows, weights and out must be set");
  }
  if (n_tokens < 0 || n_rows < 0 || dim <= 0 || (row_start == nullptr && rows_per_token <= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("moe_unpermute: bad shape n_tokens=", n_tokens,
                                                   " dim=", dim, " rows_per_token=", rows_per_token,
                                                   row_start == nullptr ? " (no row_start)" : ""));
  }
  return absl::OkStatus();
}

void MoeUnpermuteCpu(const MoeUnpermuteParams& p) {
  for (int t = 0; t < p.n_tokens; ++t) {
    const int begin = p.row_start ? p.row_start[t] : t * p.rows_per_token;
    const int end = p.row_start ? p.row_start[t + 1] : begin + p.rows_per_token;
    float* o = p.out + static_cast<size_t>(t) * p.dim;
    for (int i = 0; i < p.dim; ++i) {
      float acc = o[i];
      for (int j = begin; j < end; ++j) {
        const int r = p.rows[j];
        if (r < 0 || r >= p.n_rows) continue;
        acc += p.weights[j] * BF16ToF32(p.y[static_cast<size_t>(r) * p.dim + i]);
      }
      o[i] = acc;
    }
  }
}

}  // namespace arbor::kernels
