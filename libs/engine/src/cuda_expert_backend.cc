#include "arbor/engine/cuda_expert_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arbor/common/dtype.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/moe_permute.h"

namespace arbor::engine {

using kernels::bf16_t;
using kernels::DeviceBuffer;

absl::StatusOr<std::unique_ptr<CudaExpertBackend>> CudaExpertBackend::Create(
    const model::ModelWeights* weights, const CudaExpertOptions& options) {
  if (options.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", options.max_tokens, " must be > 0"));
  }
  std::unique_ptr<CudaExpertBackend> b(new CudaExpertBackend(weights, options));
  ARBOR_RETURN_IF_ERROR(b->Init());
  return b;
}

CudaExpertBackend::CudaExpertBackend(const model::ModelWeights* weights,
                                     const CudaExpertOptions& options)
    : weights_(weights),
      options_(options),
      hidden_(weights->config().hidden_size),
      inter_(weights->config().intermediate_size),
      n_experts_(weights->config().num_local_experts),
      top_k_(weights->config().num_experts_per_tok),
      max_rows_(options.max_tokens * weights->config().num_experts_per_tok) {}

CudaExpertBackend::~CudaExpertBackend() {
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

absl::Status CudaExpertBackend::Init() {
  ARBOR_ASSIGN_OR_RETURN(pool_, kernels::DevicePool::Create(options_.device));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ARBOR_ASSIGN_OR_RETURN(
      ffn_, kernels::ExpertFfnRunner::Create(pool_.get(), options_.gemm, n_experts_ * 8));
  const int layers = weights_->config().num_hidden_layers;
  w13_.assign(static_cast<size_t>(layers) * n_experts_, nullptr);
  w2_.assign(w13_.size(), nullptr);
  std::vector<bf16_t> staging;
  // bf16 matrices go up as they are; others are rounded to bf16 here, on the host.
  auto upload = [&](const model::Matrix& m) -> absl::StatusOr<const bf16_t*> {
    const size_t numel = static_cast<size_t>(m.rows * m.cols);
    const void* src = m.half.data();
    if (m.dtype != DType::kBF16) {
      const std::vector<float> w = m.ToF32();
      staging.resize(numel);
      for (size_t i = 0; i < numel; ++i) staging[i] = F32ToBF16(w[i]);
      src = staging.data();
    }
    ARBOR_ASSIGN_OR_RETURN(DeviceBuffer buf, pool_->Upload(src, numel * sizeof(bf16_t)));
    weight_bytes_ += numel * sizeof(bf16_t);
    weights_dev_.push_back(std::move(buf));
    return weights_dev_.back().as<const bf16_t>();
  };
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < n_experts_; ++e) {
      const model::ExpertWeights* w = weights_->expert(l, e);
      if (w == nullptr) continue;
      ARBOR_ASSIGN_OR_RETURN(w13_[l * n_experts_ + e], upload(w->w13));
      ARBOR_ASSIGN_OR_RETURN(w2_[l * n_experts_ + e], upload(w->w2));
    }
  }
  const size_t n = options_.max_tokens, r = max_rows_, h = hidden_;
  ARBOR_RETURN_IF_ERROR(pool_->AllocateAll({{&x_, n * h * sizeof(float)},
                                            {&out_, n * h * sizeof(float)},
                                            {&ids_, n * top_k_ * sizeof(int)},
                                            {&gate_w_, r * sizeof(float)},
                                            {&counts_, n_experts_ * sizeof(int)},
                                            {&offsets_, (n_experts_ + 1) * sizeof(int)},
                                            {&row_token_, r * sizeof(int)},
                                            {&slot_row_, r * sizeof(int)},
                                            {&row_start_, (n + 1) * sizeof(int)},
                                            {&x_perm_, r * h * sizeof(bf16_t)},
                                            {&y_, r * h * sizeof(bf16_t)},
                                            {&gate_up_, r * 2 * inter_ * sizeof(bf16_t)},
                                            {&act_, r * inter_ * sizeof(bf16_t)}}));
  h_counts_.resize(n_experts_);
  h_offsets_.resize(n_experts_ + 1);
  return absl::OkStatus();
}

absl::Status CudaExpertBackend::Run(const RoutedTokens& in, float* out) {
  const int n_rows = in.n_tokens * in.top_k;
  if (in.n_tokens > options_.max_tokens || in.top_k != top_k_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda expert backend: ", in.n_tokens, " tokens x top-", in.top_k,
                     " exceed the ", options_.max_tokens, "-token x top-", top_k_, " buffers"));
  }
  if (in.layer < 0 || in.layer >= weights_->config().num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", in.layer, " out of range"));
  }
  for (int i = 0; i < n_rows; ++i) {  // the device trusts the ids: check them here
    const int e = in.expert_ids[i];
    if (e < 0 || e >= n_experts_) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert backend: layer ", in.layer, " routes to expert ", e));
    }
    if (w13_[in.layer * n_experts_ + e] == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert (layer ", in.layer, ", expert ", e, ") is not loaded here"));
    }
  }
  if (in.n_tokens == 0) return absl::OkStatus();
  ARBOR_RETURN_IF_ERROR(UploadRows(in.x, out, in.n_tokens));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ids_.data(), in.expert_ids, n_rows * sizeof(int),
                                             cudaMemcpyHostToDevice, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(gate_w_.data(), in.weights, n_rows * sizeof(float),
                                             cudaMemcpyHostToDevice, stream_));
  kernels::MoePermuteParams perm;
  perm.expert_ids = ids_.as<int>(), perm.n_tokens = in.n_tokens, perm.top_k = top_k_;
  perm.n_experts = n_experts_, perm.expert_counts = counts_.as<int>();
  perm.expert_offsets = offsets_.as<int>(), perm.row_token = row_token_.as<int>();
  perm.slot_row = slot_row_.as<int>();
  ARBOR_RETURN_IF_ERROR(kernels::MoePermuteCuda(perm, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      h_counts_.data(), counts_.data(), n_experts_ * sizeof(int), cudaMemcpyDeviceToHost, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h_offsets_.data(), offsets_.data(),
                                             (n_experts_ + 1) * sizeof(int), cudaMemcpyDeviceToHost,
                                             stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // group sizes for the GEMMs
  groups_.clear();
  for (int e = 0; e < n_experts_; ++e) {
    if (h_counts_[e] == 0) continue;
    groups_.push_back({h_offsets_[e], h_counts_[e], w13_[in.layer * n_experts_ + e],
                       w2_[in.layer * n_experts_ + e]});
  }
  return Finish(in.n_tokens, n_rows, /*per_row_entries=*/false, out);
}

absl::Status CudaExpertBackend::UploadRows(const float* x, const float* out, int n) {
  const size_t bytes = static_cast<size_t>(n) * hidden_ * sizeof(float);
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x_.data(), x, bytes, cudaMemcpyHostToDevice, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out_.data(), out, bytes, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaExpertBackend::Finish(int n_x, int n_rows, bool per_row_entries, float* out) {
  ARBOR_RETURN_IF_ERROR(kernels::GatherRowsCuda({.x = x_.as<float>(),
                                                 .n_src = n_x,
                                                 .row_token = row_token_.as<int>(),
                                                 .out = x_perm_.as<bf16_t>(),
                                                 .n_rows = n_rows,
                                                 .dim = hidden_},
                                                stream_));
  ARBOR_RETURN_IF_ERROR(ffn_->Run({.x = x_perm_.as<bf16_t>(),
                                   .y = y_.as<bf16_t>(),
                                   .n_rows = n_rows,
                                   .hidden = hidden_,
                                   .inter = inter_,
                                   .groups = groups_.data(),
                                   .n_groups = static_cast<int>(groups_.size()),
                                   .gate_up = gate_up_.as<bf16_t>(),
                                   .act = act_.as<bf16_t>()},
                                  stream_));
  kernels::MoeUnpermuteParams un;
  un.y = y_.as<bf16_t>(), un.n_rows = n_rows;
  un.row_start = per_row_entries ? row_start_.as<int>() : nullptr, un.rows_per_token = top_k_;
  un.rows = slot_row_.as<int>(), un.weights = gate_w_.as<float>(), un.out = out_.as<float>();
  un.n_tokens = n_x, un.dim = hidden_;
  ARBOR_RETURN_IF_ERROR(kernels::MoeUnpermuteCuda(un, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out, out_.data(),
                                             static_cast<size_t>(n_x) * hidden_ * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream_));
  // Also what keeps the pageable host staging valid until the device has read it.
  ARBOR_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaExpertBackend::RunGroups(int layer, const float* x, int n_x,
                                          absl::Span<const ExpertGroup> groups, float* out) {
  ARBOR_RETURN_IF_ERROR(ValidateExpertGroups(*weights_, layer, n_x, groups, max_rows_));
  if (n_x > options_.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(n_x, " rows exceed the ", options_.max_tokens, "-row buffers"));
  }
  int n_rows = 0;
  for (const ExpertGroup& g : groups) n_rows += g.n;
  if (n_rows > max_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat(n_rows, " grouped rows exceed the buffers of ", max_rows_));
  }
  if (n_x == 0 || n_rows == 0) return absl::OkStatus();
  // Grouped order = the request's order; then, per x row, its (grouped row, weight) entries.
  h_rows_.clear();
  groups_.clear();
  h_row_start_.assign(n_x + 1, 0);
  for (const ExpertGroup& g : groups) {
    if (g.n == 0) continue;
    groups_.push_back({static_cast<int>(h_rows_.size()), g.n, w13_[layer * n_experts_ + g.expert],
                       w2_[layer * n_experts_ + g.expert]});
    for (int r = 0; r < g.n; ++r) {
      h_rows_.push_back(g.rows[r]);
      ++h_row_start_[g.rows[r] + 1];
    }
  }
  for (int t = 0; t < n_x; ++t) h_row_start_[t + 1] += h_row_start_[t];
  h_entry_rows_.assign(n_rows, 0);
  h_entry_w_.assign(n_rows, 0.0f);
  h_fill_.assign(h_row_start_.begin(), h_row_start_.end() - 1);
  int grouped = 0;
  for (const ExpertGroup& g : groups) {
    for (int r = 0; r < g.n; ++r, ++grouped) {
      const int at = h_fill_[g.rows[r]]++;
      h_entry_rows_[at] = grouped;
      h_entry_w_[at] = g.weights[r];
    }
  }
  ARBOR_RETURN_IF_ERROR(UploadRows(x, out, n_x));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      row_token_.data(), h_rows_.data(), n_rows * sizeof(int), cudaMemcpyHostToDevice, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(row_start_.data(), h_row_start_.data(),
                                             (n_x + 1) * sizeof(int), cudaMemcpyHostToDevice,
                                             stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(slot_row_.data(), h_entry_rows_.data(),
                                             n_rows * sizeof(int), cudaMemcpyHostToDevice,
                                             stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      gate_w_.data(), h_entry_w_.data(), n_rows * sizeof(float), cudaMemcpyHostToDevice, stream_));
  return Finish(n_x, n_rows, /*per_row_entries=*/true, out);
}

}  // namespace arbor::engine
