// The MoE experts of a ModelWeights on a CUDA device (builds with ARBOR_HAVE_CUDA only). At
// Create every loaded expert's w13 and w2 are converted to bf16 and copied to the device (a
// DevicePool of the backend's own). A call then runs, on one stream:
//   Run:       upload x and the routing -> MoePermuteCuda (group (token, slot) rows by expert)
//              -> counts back to the host (the GEMM group sizes) -> GatherRows (x to bf16, in
//              expert order) -> ExpertFfnRunner (grouped GEMM w13, SwiGLU, grouped GEMM w2)
//              -> MoeUnpermuteCuda (weighted sum into out, in slot order) -> out back
//   RunGroups: the same from the request's own grouping (an expert worker's rows), with the
//              per-row sums in each row's group order.
// Buffers are sized at Create; a call allocates no device memory. Not thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/kernels/device_pool.h"
#include "arbor/kernels/expert_ffn.h"

namespace arbor::engine {

struct CudaExpertOptions {
  int device = 0;
  int max_tokens = 512;  // routed tokens per Run; grouped rows per RunGroups are max_tokens*top_k
  kernels::ExpertGemm gemm = kernels::ExpertGemm::kAuto;
};

class CudaExpertBackend : public ExpertBackend {
 public:
  // `weights` must outlive the backend. INVALID_ARGUMENT for max_tokens <= 0; device errors
  // (RESOURCE_EXHAUSTED when the experts do not fit) as Status.
  static absl::StatusOr<std::unique_ptr<CudaExpertBackend>> Create(
      const model::ModelWeights* weights, const CudaExpertOptions& options);
  ~CudaExpertBackend() override;

  absl::Status Run(const RoutedTokens& tokens, float* out) override;
  absl::Status RunGroups(int layer, const float* x, int n_x, absl::Span<const ExpertGroup> groups,
                         float* out) override;
  const char* name() const override { return "cuda"; }

  // Bytes of expert weights on the device, and the GEMM path in use.
  size_t weight_bytes() const { return weight_bytes_; }
  kernels::ExpertGemm gemm() const { return ffn_->mode(); }

 private:
  CudaExpertBackend(const model::ModelWeights* weights, const CudaExpertOptions& options);
  absl::Status Init();
  // Enqueues the copies of x and out ([n, hidden] each) to the device.
  absl::Status UploadRows(const float* x, const float* out, int n);
  // The shared tail, once row_token_, slot_row_ and gate_w_ (and row_start_ when
  // `per_row_entries`; else top_k entries per row) and groups_ are set: gather, FFN, weighted
  // unpermute into out_, then out_ back to `out` ([n_x, hidden]).
  absl::Status Finish(int n_x, int n_rows, bool per_row_entries, float* out);

  const model::ModelWeights* weights_;
  const CudaExpertOptions options_;
  int hidden_, inter_, n_experts_, top_k_, max_rows_;
  std::unique_ptr<kernels::DevicePool> pool_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kernels::ExpertFfnRunner> ffn_;
  size_t weight_bytes_ = 0;
  std::vector<kernels::DeviceBuffer> weights_dev_;  // every loaded expert's w13, w2
  std::vector<const kernels::bf16_t*> w13_, w2_;    // [layer * n_experts + expert] or null

  // Device buffers, sized at Create. N = max_tokens, R = max rows.
  kernels::DeviceBuffer x_;          // [N, hidden] f32
  kernels::DeviceBuffer out_;        // [N, hidden] f32
  kernels::DeviceBuffer ids_;        // [N, top_k]
  kernels::DeviceBuffer gate_w_;     // [R] routing weights (Run) or per-entry weights (RunGroups)
  kernels::DeviceBuffer counts_;     // [n_experts]
  kernels::DeviceBuffer offsets_;    // [n_experts + 1]
  kernels::DeviceBuffer row_token_;  // [R]
  kernels::DeviceBuffer slot_row_;   // [R]
  kernels::DeviceBuffer row_start_;  // [N + 1]
  kernels::DeviceBuffer x_perm_;     // [R, hidden] bf16
  kernels::DeviceBuffer y_;          // [R, hidden] bf16
  kernels::DeviceBuffer gate_up_;    // [R, 2 * inter] bf16
  kernels::DeviceBuffer act_;        // [R, inter] bf16
  // Host staging.
  std::vector<kernels::ExpertFfnGroup> groups_;  // this call's GEMM problems
  std::vector<int> h_counts_, h_offsets_, h_rows_, h_row_start_, h_fill_, h_entry_rows_;
  std::vector<float> h_entry_w_;
};

}  // namespace arbor::engine
