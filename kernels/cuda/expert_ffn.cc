#include "arbor/kernels/expert_ffn.h"

#include <cublas_v2.h>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/cublas_api.h"
#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/swiglu.h"

namespace arbor::kernels {

absl::Status ExpertFfnParams::Validate() const {
  if (x == nullptr || y == nullptr || gate_up == nullptr || act == nullptr ||
      (n_groups > 0 && groups == nullptr)) {
    return absl::InvalidArgumentError("expert_ffn: x, y, gate_up, act and groups must be set");
  }
  if (n_rows < 0 || hidden <= 0 || inter <= 0 || n_groups < 0) {
    return absl::InvalidArgumentError(absl::StrCat("expert_ffn: bad shape n_rows=", n_rows,
                                                   " hidden=", hidden, " inter=", inter,
                                                   " n_groups=", n_groups));
  }
  for (int g = 0; g < n_groups; ++g) {
    const ExpertFfnGroup& gr = groups[g];
    if (gr.row_begin < 0 || gr.n_rows < 0 || gr.row_begin + gr.n_rows > n_rows) {
      return absl::InvalidArgumentError(absl::StrCat("expert_ffn: group ", g, " rows [",
                                                     gr.row_begin, ", +", gr.n_rows,
                                                     ") outside [0, ", n_rows, ")"));
    }
    if (gr.n_rows > 0 && (gr.w13 == nullptr || gr.w2 == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat("expert_ffn: group ", g, " has no weights"));
    }
  }
  return absl::OkStatus();
}

double ExpertFfnFlops(int rows, int hidden, int inter) { return 2.0 * rows * hidden * 3.0 * inter; }

absl::StatusOr<std::unique_ptr<ExpertFfnRunner>> ExpertFfnRunner::Create(DevicePool* pool,
                                                                         ExpertGemm mode,
                                                                         int max_groups) {
  if (max_groups <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("expert_ffn: max_groups ", max_groups));
  }
  std::unique_ptr<ExpertFfnRunner> r(new ExpertFfnRunner(mode, max_groups));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaSetDevice(pool->device()));
  auto api = Cublas();
  if (!api.ok()) return api.status();
  r->api_ = *api;
  cublasHandle_t handle = nullptr;
  ARBOR_CUBLAS_RETURN_IF_ERROR(r->api_->create(&handle));
  r->handle_ = handle;
  ARBOR_CUBLAS_RETURN_IF_ERROR(r->api_->set_math_mode(handle, CUBLAS_DEFAULT_MATH));
  const size_t n = static_cast<size_t>(max_groups);
  auto ptrs = pool->Allocate(3 * n * sizeof(void*));
  if (!ptrs.ok()) return ptrs.status();
  r->ptrs_ = std::move(*ptrs);
  r->host_ptrs_.resize(3 * n);
  for (auto* v : {&r->m_, &r->n_, &r->k_}) v->resize(n);
  r->transa_.assign(n, CUBLAS_OP_T);
  r->transb_.assign(n, CUBLAS_OP_N);
  r->alpha_.assign(n, 1.0f);
  r->beta_.assign(n, 0.0f);
  r->sizes_.assign(n, 1);
  return r;
}

ExpertFfnRunner::~ExpertFfnRunner() {
  if (handle_ != nullptr) api_->destroy(handle_);
}

absl::Status ExpertFfnRunner::Run(const ExpertFfnParams& p, cudaStream_t stream) {
  if (absl::Status st = p.Validate(); !st.ok()) return st;
  if (p.n_groups > max_groups_) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert_ffn: ", p.n_groups, " groups exceed max_groups ", max_groups_));
  }
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->set_stream(handle_, stream));
  absl::Status st = RunOnce(p, stream);
  if (mode_ == ExpertGemm::kAuto) {
    if (st.ok()) {
      mode_ = ExpertGemm::kGrouped;
    } else if (absl::IsUnimplemented(st)) {
      mode_ = ExpertGemm::kLoop;
      return RunOnce(p, stream);
    }
  }
  return st;
}

absl::Status ExpertFfnRunner::RunOnce(const ExpertFfnParams& p, cudaStream_t stream) {
  ARBOR_RETURN_IF_ERROR(
      Project(p, {&ExpertFfnGroup::w13, p.x, p.hidden, p.gate_up, 2 * p.inter}, stream));
  ARBOR_RETURN_IF_ERROR(SwiGluBf16Cuda(
      {.gate_up = p.gate_up, .out = p.act, .n_rows = p.n_rows, .dim = p.inter}, stream));
  return Project(p, {&ExpertFfnGroup::w2, p.act, p.inter, p.y, p.hidden}, stream);
}

// Row-major X [rows, K] times row-major W [N, K] transposed is, in cuBLAS's column-major terms,
// C^T [N, rows] = op_T(W as [K, N]) * X^T as [K, rows]: m = N, n = rows, k = K, lda = ldb = K,
// ldc = N.
absl::Status ExpertFfnRunner::Project(const ExpertFfnParams& p, const Projection& pr,
                                      cudaStream_t stream) {
  if (mode_ == ExpertGemm::kLoop) {
    const float one = 1.0f, zero = 0.0f;
    for (int g = 0; g < p.n_groups; ++g) {
      const ExpertFfnGroup& gr = p.groups[g];
      if (gr.n_rows == 0) continue;
      ARBOR_CUBLAS_RETURN_IF_ERROR(api_->gemm_ex(
          handle_, CUBLAS_OP_T, CUBLAS_OP_N, pr.n_out, gr.n_rows, pr.k, &one, gr.*pr.weight,
          CUDA_R_16BF, pr.k, pr.in + static_cast<size_t>(gr.row_begin) * pr.k, CUDA_R_16BF, pr.k,
          &zero, pr.out + static_cast<size_t>(gr.row_begin) * pr.n_out, CUDA_R_16BF, pr.n_out,
          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    return absl::OkStatus();
  }
  // One grouped call: host_ptrs_ rows 0, 1, 2 = the A (weights), B (inputs), C (outputs) arrays.
  const size_t cap = static_cast<size_t>(max_groups_);
  int used = 0;
  for (int g = 0; g < p.n_groups; ++g) {
    const ExpertFfnGroup& gr = p.groups[g];
    if (gr.n_rows == 0) continue;
    host_ptrs_[0 * cap + used] = gr.*pr.weight;
    host_ptrs_[1 * cap + used] = pr.in + static_cast<size_t>(gr.row_begin) * pr.k;
    host_ptrs_[2 * cap + used] = pr.out + static_cast<size_t>(gr.row_begin) * pr.n_out;
    n_[used] = gr.n_rows;
    ++used;
  }
  if (used == 0) return absl::OkStatus();
  // Pageable source: the call returns once the data is staged, so host_ptrs_ may be reused; the
  // device array is reused in stream order, after the previous call has read it.
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      ptrs_.data(), host_ptrs_.data(), 3 * cap * sizeof(void*), cudaMemcpyHostToDevice, stream));
  std::fill(m_.begin(), m_.begin() + used, pr.n_out);  // also ldc
  std::fill(k_.begin(), k_.begin() + used, pr.k);      // also lda and ldb
  auto* dev = ptrs_.as<void*>();
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->gemm_grouped_batched_ex(
      handle_, reinterpret_cast<const cublasOperation_t*>(transa_.data()),
      reinterpret_cast<const cublasOperation_t*>(transb_.data()), m_.data(), n_.data(), k_.data(),
      alpha_.data(), dev + 0 * cap, CUDA_R_16BF, k_.data(), dev + 1 * cap, CUDA_R_16BF, k_.data(),
      beta_.data(), dev + 2 * cap, CUDA_R_16BF, m_.data(), used, sizes_.data(),
      CUBLAS_COMPUTE_32F));
  return absl::OkStatus();
}

}  // namespace arbor::kernels
