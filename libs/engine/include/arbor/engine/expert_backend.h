// The MoE feed-forward of one layer, behind an interface: the engine runs it in-process on the
// CPU today; the router runs it over gRPC on expert workers, and the GPU backend on CUDA.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "arbor/model/weights.h"

namespace arbor::engine {

// Tokens of one layer with their routing: token t goes to experts ids[t * top_k + j] with
// weights w[t * top_k + j].
struct RoutedTokens {
  int layer = 0;
  const float* x = nullptr;  // [n_tokens, hidden] (post-attention RMSNorm output)
  int n_tokens = 0;
  int top_k = 0;
  const int* expert_ids = nullptr;  // [n_tokens, top_k]
  const float* weights = nullptr;   // [n_tokens, top_k]
};

// Rows of x already grouped by expert (what an expert worker receives): expert `expert` runs on
// x[rows[r]] and adds weights[r] times its output into out[rows[r]], for r < n.
struct ExpertGroup {
  int expert = 0;
  const int* rows = nullptr;
  const float* weights = nullptr;
  int n = 0;
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;

  // Adds sum_j w[t, j] * FFN_{ids[t, j]}(x[t]) into out[t] for every token: out is
  // [n_tokens, hidden]. Errors leave `out` unspecified and name the layer and expert.
  virtual absl::Status Run(const RoutedTokens& tokens, float* out) = 0;

  // Runs pre-grouped rows: x and out are [n_x, hidden]. Every group is validated before
  // anything is computed: INVALID_ARGUMENT (layer, expert or row out of range, a group larger
  // than the buffers), FAILED_PRECONDITION (expert not loaded). UNIMPLEMENTED for backends
  // that only route (the remote one).
  virtual absl::Status RunGroups(int layer, const float* x, int n_x,
                                 absl::Span<const ExpertGroup> groups, float* out) {
    return absl::UnimplementedError("this expert backend takes routed tokens only");
  }

  // "cpu", "cuda", "remote".
  virtual const char* name() const = 0;
};

// Checks groups against the weights (loaded experts, rows in [0, n_x), at most max_rows rows
// per group); the errors RunGroups documents.
absl::Status ValidateExpertGroups(const model::ModelWeights& weights, int layer, int n_x,
                                  absl::Span<const ExpertGroup> groups, size_t max_rows);

// The backend called `name`: "cpu", "cuda" (this build must have CUDA and the machine a device),
// or "auto" (cuda when both hold, else cpu). `weights` must outlive it; it takes up to
// max_tokens routed tokens (or grouped rows) per call. INVALID_ARGUMENT for an unknown name,
// FAILED_PRECONDITION for cuda without CUDA or a device, errors from the device otherwise.
absl::StatusOr<std::unique_ptr<ExpertBackend>> CreateExpertBackend(
    const model::ModelWeights* weights, int max_tokens, const std::string& name);

// Runs the experts held in a ModelWeights with OpenBLAS. Tokens are grouped by expert (a
// counting sort), so every expert runs one GEMM against [w1; w3], the SwiGLU, and one GEMM
// against w2 per call. Buffers are sized once at Create for `max_tokens`; Run allocates no heap
// memory. Not thread-safe: one caller at a time.
class CpuExpertBackend : public ExpertBackend {
 public:
  // `weights` must outlive the backend. INVALID_ARGUMENT if max_tokens <= 0.
  static absl::StatusOr<std::unique_ptr<CpuExpertBackend>> Create(
      const model::ModelWeights* weights, int max_tokens);

  // FAILED_PRECONDITION naming (layer, expert) when a routed expert is not loaded;
  // INVALID_ARGUMENT for more tokens than max_tokens or an expert id out of range.
  absl::Status Run(const RoutedTokens& tokens, float* out) override;

  using ExpertGroup = engine::ExpertGroup;
  absl::Status RunGroups(int layer, const float* x, int n_x, absl::Span<const ExpertGroup> groups,
                         float* out) override;
  const char* name() const override { return "cpu"; }

  // Rows each expert has received so far: [layer][expert].
  const std::vector<std::vector<int64_t>>& tokens_per_expert() const { return counts_total_; }
  // Expert groups run so far (one [w1; w3] GEMM and one w2 GEMM each): [layer].
  const std::vector<int64_t>& groups_run() const { return groups_run_; }

 private:
  CpuExpertBackend(const model::ModelWeights* weights, int max_tokens);

  const model::ModelWeights* weights_;
  int max_tokens_;
  int hidden_, inter_, n_experts_;
  std::vector<int> offsets_;         // [n_experts + 1] start of each expert's rows in the grouping
  std::vector<int> fill_;            // [n_experts]
  std::vector<int> row_token_;       // [max_rows] token index of each grouped row
  std::vector<float> row_weight_;    // [max_rows]
  std::vector<float> gathered_;      // [max_rows, hidden]
  std::vector<float> gate_up_;       // [max_rows, 2 * inter]
  std::vector<float> act_;           // [max_rows, inter]
  std::vector<float> down_;          // [max_rows, hidden]
  std::vector<ExpertGroup> groups_;  // [n_experts] Run's grouping
  std::vector<std::vector<int64_t>> counts_total_;
  std::vector<int64_t> groups_run_;
};

}  // namespace arbor::engine
