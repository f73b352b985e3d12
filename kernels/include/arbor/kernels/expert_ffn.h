// The Mixtral expert FFN of many experts at once on the GPU, over rows already grouped by expert
// (MoePermute's layout): for each group, gate_up = x W13^T, act = silu(a) * b (SwiGluBf16), and
// y = act W2^T. Weights and activations are bf16, accumulation f32 (CUBLAS_COMPUTE_32F).
//
// ExpertGemm::kGrouped issues each of the two projections as one cublasGemmGroupedBatchedEx
// over every group (cuBLAS >= 12.5); kLoop issues one cublasGemmEx per group; kAuto tries the
// grouped call and falls back to the loop for good if cuBLAS reports it unsupported.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/kernels/device_pool.h"
#include "arbor/kernels/gpu.h"

struct cublasContext;

namespace arbor::kernels {

struct CublasApi;

enum class ExpertGemm { kAuto, kGrouped, kLoop };

// One GEMM problem: rows [row_begin, row_begin + n_rows) of x run through one expert.
struct ExpertFfnGroup {
  int row_begin = 0;
  int n_rows = 0;
  const bf16_t* w13 = nullptr;  // device [2 * inter, hidden]: w1 rows, then w3 rows
  const bf16_t* w2 = nullptr;   // device [hidden, inter]
};

struct ExpertFfnParams {
  const bf16_t* x = nullptr;  // device [n_rows, hidden]
  bf16_t* y = nullptr;        // device [n_rows, hidden]; rows outside every group untouched
  int n_rows = 0;
  int hidden = 0;
  int inter = 0;
  const ExpertFfnGroup* groups = nullptr;  // host [n_groups]; disjoint row ranges
  int n_groups = 0;
  bf16_t* gate_up = nullptr;  // device workspace [n_rows, 2 * inter]
  bf16_t* act = nullptr;      // device workspace [n_rows, inter]

  // Pointers, shapes, and every group inside [0, n_rows).
  absl::Status Validate() const;
};

// Owns a cuBLAS handle and the device arrays of matrix pointers the grouped call reads. Not
// thread-safe: one caller at a time (the handle is bound to the stream of each Run).
class ExpertFfnRunner {
 public:
  // `pool` must outlive the runner; up to `max_groups` groups per Run. Errors from cuBLAS.
  static absl::StatusOr<std::unique_ptr<ExpertFfnRunner>> Create(DevicePool* pool, ExpertGemm mode,
                                                                 int max_groups);
  ~ExpertFfnRunner();

  // Enqueues the FFN on `stream`; returns once enqueued. INVALID_ARGUMENT from Validate or more
  // than max_groups groups; INTERNAL / UNIMPLEMENTED from cuBLAS naming the call.
  absl::Status Run(const ExpertFfnParams& p, cudaStream_t stream);

  // kGrouped or kLoop: what Run uses now (kAuto resolves on the first Run).
  ExpertGemm mode() const { return mode_; }

 private:
  ExpertFfnRunner(ExpertGemm mode, int max_groups) : mode_(mode), max_groups_(max_groups) {}
  // One projection of every group: out[rows] = in[rows] W^T, W = group.*weight [n_out, k].
  struct Projection {
    const bf16_t* ExpertFfnGroup::*weight;
    const bf16_t* in;  // device [n_rows, k]
    int k;
    bf16_t* out;  // device [n_rows, n_out]
    int n_out;
  };
  // Both projections and the SwiGLU between them, in the current mode (grouped unless kLoop).
  absl::Status RunOnce(const ExpertFfnParams& p, cudaStream_t stream);
  absl::Status Project(const ExpertFfnParams& p, const Projection& pr, cudaStream_t stream);

  ExpertGemm mode_;
  const int max_groups_;
  const CublasApi* api_ = nullptr;
  cublasContext* handle_ = nullptr;
  DeviceBuffer ptrs_;                   // device [3, max_groups] A, B, C matrix pointers
  std::vector<const void*> host_ptrs_;  // [3, max_groups] staging for ptrs_
  std::vector<int> m_, n_, k_, sizes_;  // per group; m is also ldc, k also lda and ldb
  std::vector<int> transa_, transb_;    // cublasOperation_t values
  std::vector<float> alpha_, beta_;
};

// Dense-GEMM FLOPs of Run: 2 * rows * hidden * 3 * inter.
double ExpertFfnFlops(int rows, int hidden, int inter);

}  // namespace arbor::kernels
