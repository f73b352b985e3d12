#include "arbor/engine/expert_backend.h"

#include <cblas.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/matmul.h"
#include "arbor/kernels/swiglu.h"

namespace arbor::engine {

absl::Status ValidateExpertGroups(const model::ModelWeights& weights, int layer, int n_x,
                                  absl::Span<const ExpertGroup> groups, size_t max_rows) {
  const model::ModelConfig& c = weights.config();
  if (layer < 0 || layer >= c.num_hidden_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " out of range [0, ", c.num_hidden_layers, ")"));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const ExpertGroup& grp = groups[g];
    if (grp.expert < 0 || grp.expert >= c.num_local_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "group ", g, ": expert ", grp.expert, " out of range [0, ", c.num_local_experts, ")"));
    }
    if (weights.expert(layer, grp.expert) == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert (layer ", layer, ", expert ", grp.expert, ") is not loaded here"));
    }
    if (grp.n < 0 || static_cast<size_t>(grp.n) > max_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", g, ": ", grp.n, " rows exceed the buffers of ", max_rows));
    }
    for (int r = 0; r < grp.n; ++r) {
      if (grp.rows[r] < 0 || grp.rows[r] >= n_x) {
        return absl::InvalidArgumentError(
            absl::StrCat("group ", g, ": row ", grp.rows[r], " out of range [0, ", n_x, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CpuExpertBackend>> CpuExpertBackend::Create(
    const model::ModelWeights* weights, int max_tokens) {
  if (max_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", max_tokens, " must be > 0"));
  }
  return std::unique_ptr<CpuExpertBackend>(new CpuExpertBackend(weights, max_tokens));
}

CpuExpertBackend::CpuExpertBackend(const model::ModelWeights* weights, int max_tokens)
    : weights_(weights),
      max_tokens_(max_tokens),
      hidden_(weights->config().hidden_size),
      inter_(weights->config().intermediate_size),
      n_experts_(weights->config().num_local_experts) {
  const size_t max_rows = static_cast<size_t>(max_tokens) * weights->config().num_experts_per_tok;
  offsets_.resize(n_experts_ + 1);
  fill_.resize(n_experts_);
  row_token_.resize(max_rows);
  row_weight_.resize(max_rows);
  gathered_.resize(max_rows * hidden_);
  gate_up_.resize(max_rows * 2 * inter_);
  act_.resize(max_rows * inter_);
  down_.resize(max_rows * hidden_);
  counts_total_.assign(weights->config().num_hidden_layers, std::vector<int64_t>(n_experts_, 0));
  groups_.reserve(n_experts_);
  groups_run_.assign(weights->config().num_hidden_layers, 0);
}

absl::Status CpuExpertBackend::Run(const RoutedTokens& in, float* out) {
  const int n_rows = in.n_tokens * in.top_k;
  if (in.n_tokens > max_tokens_ || static_cast<size_t>(n_rows) > row_token_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("expert backend: ", in.n_tokens,
                                                   " tokens x top-", in.top_k, " exceed the ",
                                                   max_tokens_, "-token buffers"));
  }
  // Counting sort of (token, slot) rows by expert.
  std::fill(offsets_.begin(), offsets_.end(), 0);
  for (int i = 0; i < n_rows; ++i) {
    const int e = in.expert_ids[i];
    if (e < 0 || e >= n_experts_) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert backend: layer ", in.layer, " routes to expert ", e));
    }
    ++offsets_[e + 1];
  }
  for (int e = 0; e < n_experts_; ++e) offsets_[e + 1] += offsets_[e];
  std::copy(offsets_.begin(), offsets_.end() - 1, fill_.begin());
  for (int i = 0; i < n_rows; ++i) {
    const int row = fill_[in.expert_ids[i]]++;
    row_token_[row] = i / in.top_k;
    row_weight_[row] = in.weights[i];
  }

  groups_.clear();
  for (int e = 0; e < n_experts_; ++e) {
    const int begin = offsets_[e], n = offsets_[e + 1] - begin;
    if (n > 0) groups_.push_back({e, row_token_.data() + begin, row_weight_.data() + begin, n});
  }
  return RunGroups(in.layer, in.x, in.n_tokens, groups_, out);
}

absl::Status CpuExpertBackend::RunGroups(int layer, const float* x, int n_x,
                                         absl::Span<const ExpertGroup> groups, float* out) {
  ARBOR_RETURN_IF_ERROR(ValidateExpertGroups(*weights_, layer, n_x, groups, row_weight_.size()));
  for (const ExpertGroup& grp : groups) {
    const int n = grp.n;
    if (n == 0) continue;
    const model::ExpertWeights* w = weights_->expert(layer, grp.expert);
    counts_total_[layer][grp.expert] += n;
    ++groups_run_[layer];
    float* xg = gathered_.data();  // [n, hidden]
    for (int r = 0; r < n; ++r) {
      const float* src = x + static_cast<size_t>(grp.rows[r]) * hidden_;
      std::copy(src, src + hidden_, xg + static_cast<size_t>(r) * hidden_);
    }
    float* gu = gate_up_.data();  // [n, 2 * inter]
    kernels::MatMulWT(xg, w->w13.view(), gu, n, 2 * inter_, hidden_, 0.0f);
    float* act = act_.data();  // [n, inter]
    kernels::SwiGluCpu({.gate_up = gu, .out = act, .n_rows = n, .dim = inter_});
    float* down = down_.data();  // [n, hidden]
    kernels::MatMulWT(act, w->w2.view(), down, n, hidden_, inter_, 0.0f);
    for (int r = 0; r < n; ++r) {
      cblas_saxpy(hidden_, grp.weights[r], down + static_cast<size_t>(r) * hidden_, 1,
                  out + static_cast<size_t>(grp.rows[r]) * hidden_, 1);
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
