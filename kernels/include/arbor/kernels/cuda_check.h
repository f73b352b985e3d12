// CUDA and cuBLAS errors as absl::Status (CUDA builds only; includes the CUDA headers). Nothing in
// Arbor exits on a device error: every call site returns the Status naming what failed.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace arbor::kernels {

// OK for cudaSuccess; otherwise INTERNAL (RESOURCE_EXHAUSTED for out-of-memory) with `what`,
// the error's name and its description.
absl::Status CudaStatus(cudaError_t err, const char* what);
absl::Status CublasStatus(cublasStatus_t err, const char* what);

// The status of the last kernel launch on this thread (cudaGetLastError), naming `kernel`.
absl::Status LaunchStatus(const char* kernel);

}  // namespace arbor::kernels

#define ARBOR_CUDA_RETURN_IF_ERROR(expr)                                             \
  do {                                                                               \
    const absl::Status _arbor_cuda_st = ::arbor::kernels::CudaStatus((expr), #expr); \
    if (!_arbor_cuda_st.ok()) return _arbor_cuda_st;                                 \
  } while (0)

#define ARBOR_CUBLAS_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                   \
    const absl::Status _arbor_cublas_st = ::arbor::kernels::CublasStatus((expr), #expr); \
    if (!_arbor_cublas_st.ok()) return _arbor_cublas_st;                                 \
  } while (0)
