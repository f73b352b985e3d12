#include "arbor/kernels/expert_ffn.h"

#include <cublas_v2.h>

#include "absl/strings/str_cat.h"
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
  auto ptrs = pool->Allocate(6 * n * sizeof(void*));
  if (!ptrs.ok()) return ptrs.status();
  r->ptrs_ = std::move(*ptrs);
  r->host_ptrs_.resize(6 * n);
  for (auto* v : {&r->m_, &r->n_, &r->k_, &r->lda_, &r->ldb_, &r->ldc_, &r->sizes_}) v->resize(n);
  r->transa_.assign(n, CUBLAS_OP_T);
  r->transb_.assign(n, CUBLAS_OP_N);
  r->alpha_.assign(n, 1.0f);
  r->beta_.assign(n, 0.0f);
  std::fill(r->sizes_.begin(), r->sizes_.end(), 1);
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
  if (mode_ == ExpertGemm::kLoop) return RunLoop(p, stream);
  absl::Status st = RunGrouped(p, stream);
  if (mode_ == ExpertGemm::kAuto) {
    if (st.ok()) {
      mode_ = ExpertGemm::kGrouped;
    } else if (absl::IsUnimplemented(st)) {
      mode_ = ExpertGemm::kLoop;
      return RunLoop(p, stream);
    }
  }
  return st;
}

// Row-major X [rows, K] times row-major W [N, K] transposed is, in cuBLAS's column-major terms,
// C^T [N, rows] = op_T(W as [K, N]) * X^T as [K, rows]: m = N, n = rows, k = K, lda = ldb = K.
absl::Status ExpertFfnRunner::RunLoop(const ExpertFfnParams& p, cudaStream_t stream) {
  const float one = 1.0f, zero = 0.0f;
  const size_t h = p.hidden, i2 = 2 * static_cast<size_t>(p.inter), in = p.inter;
  for (int g = 0; g < p.n_groups; ++g) {
    const ExpertFfnGroup& gr = p.groups[g];
    if (gr.n_rows == 0) continue;
    ARBOR_CUBLAS_RETURN_IF_ERROR(
        api_->gemm_ex(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(i2), gr.n_rows, p.hidden,
                      &one, gr.w13, CUDA_R_16BF, p.hidden, p.x + gr.row_begin * h, CUDA_R_16BF,
                      p.hidden, &zero, p.gate_up + gr.row_begin * i2, CUDA_R_16BF,
                      static_cast<int>(i2), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (absl::Status st = SwiGluBf16Cuda({p.gate_up, p.act, p.n_rows, p.inter}, stream); !st.ok()) {
    return st;
  }
  for (int g = 0; g < p.n_groups; ++g) {
    const ExpertFfnGroup& gr = p.groups[g];
    if (gr.n_rows == 0) continue;
    ARBOR_CUBLAS_RETURN_IF_ERROR(api_->gemm_ex(
        handle_, CUBLAS_OP_T, CUBLAS_OP_N, p.hidden, gr.n_rows, p.inter, &one, gr.w2, CUDA_R_16BF,
        p.inter, p.act + gr.row_begin * in, CUDA_R_16BF, p.inter, &zero, p.y + gr.row_begin * h,
        CUDA_R_16BF, p.hidden, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

absl::Status ExpertFfnRunner::RunGrouped(const ExpertFfnParams& p, cudaStream_t stream) {
  const size_t h = p.hidden, i2 = 2 * static_cast<size_t>(p.inter), in = p.inter;
  const size_t cap = static_cast<size_t>(max_groups_);
  // host_ptrs_ rows: 0-2 = A, B, C of the w13 GEMM; 3-5 = A, B, C of the w2 GEMM.
  int used = 0;
  for (int g = 0; g < p.n_groups; ++g) {
    const ExpertFfnGroup& gr = p.groups[g];
    if (gr.n_rows == 0) continue;
    host_ptrs_[0 * cap + used] = gr.w13;
    host_ptrs_[1 * cap + used] = p.x + gr.row_begin * h;
    host_ptrs_[2 * cap + used] = p.gate_up + gr.row_begin * i2;
    host_ptrs_[3 * cap + used] = gr.w2;
    host_ptrs_[4 * cap + used] = p.act + gr.row_begin * in;
    host_ptrs_[5 * cap + used] = p.y + gr.row_begin * h;
    n_[used] = gr.n_rows;
    ++used;
  }
  if (used == 0) return absl::OkStatus();
  // Pageable source: the call returns once the data is staged, so host_ptrs_ may be reused.
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      ptrs_.data(), host_ptrs_.data(), 6 * cap * sizeof(void*), cudaMemcpyHostToDevice, stream));
  auto* dev = ptrs_.as<void*>();
  const auto* ta = reinterpret_cast<const cublasOperation_t*>(transa_.data());
  const auto* tb = reinterpret_cast<const cublasOperation_t*>(transb_.data());
  std::fill(m_.begin(), m_.begin() + used, static_cast<int>(i2));
  std::fill(k_.begin(), k_.begin() + used, p.hidden);
  std::fill(lda_.begin(), lda_.begin() + used, p.hidden);
  std::fill(ldb_.begin(), ldb_.begin() + used, p.hidden);
  std::fill(ldc_.begin(), ldc_.begin() + used, static_cast<int>(i2));
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->gemm_grouped_batched_ex(
      handle_, ta, tb, m_.data(), n_.data(), k_.data(), alpha_.data(), dev + 0 * cap, CUDA_R_16BF,
      lda_.data(), dev + 1 * cap, CUDA_R_16BF, ldb_.data(), beta_.data(), dev + 2 * cap,
      CUDA_R_16BF, ldc_.data(), used, sizes_.data(), CUBLAS_COMPUTE_32F));
  if (absl::Status st = SwiGluBf16Cuda({p.gate_up, p.act, p.n_rows, p.inter}, stream); !st.ok()) {
    return st;
  }
  std::fill(m_.begin(), m_.begin() + used, p.hidden);
  std::fill(k_.begin(), k_.begin() + used, p.inter);
  std::fill(lda_.begin(), lda_.begin() + used, p.inter);
  std::fill(ldb_.begin(), ldb_.begin() + used, p.inter);
  std::fill(ldc_.begin(), ldc_.begin() + used, p.hidden);
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->gemm_grouped_batched_ex(
      handle_, ta, tb, m_.data(), n_.data(), k_.data(), alpha_.data(), dev + 3 * cap, CUDA_R_16BF,
      lda_.data(), dev + 4 * cap, CUDA_R_16BF, ldb_.data(), beta_.data(), dev + 5 * cap,
      CUDA_R_16BF, ldc_.data(), used, sizes_.data(), CUBLAS_COMPUTE_32F));
  return absl::OkStatus();
}

}  // namespace arbor::kernels
