// cuBLAS, loaded with dlopen on first use instead of linked (CUDA builds only).
//
// Why: libcublasLt carries ~94 KB of static TLS. A library linked at start-up puts its TLS at
// the top of every thread's stack, and the metrics server (civetweb, through prometheus-cpp)
// starts its threads with ~100 KB stacks, so linking cuBLAS makes every service's /metrics fail
// to start ("Cannot create threads"), GPU or not. A dlopen'ed library's TLS is allocated per
// thread on demand instead, and processes that never ask for the GPU never load cuBLAS at all.
#pragma once

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace arbor::kernels {

struct CublasApi {
  decltype(&::cublasCreate) create;
  decltype(&::cublasDestroy) destroy;
  decltype(&::cublasSetStream) set_stream;
  decltype(&::cublasSetMathMode) set_math_mode;
  // The C API's GemmEx (cublas_api.h also declares an inline C++ overload taking a data type).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t);
  decltype(&::cublasGemmGroupedBatchedEx) gemm_grouped_batched_ex;
  decltype(&::cublasSgemm) sgemm;
  decltype(&::cublasGetStatusName) status_name;
  decltype(&::cublasGetStatusString) status_string;
};

// The loaded library (thread-safe; loads once). FAILED_PRECONDITION naming the library and
// dlerror() when it or one of its functions cannot be found.
absl::StatusOr<const CublasApi*> Cublas();

}  // namespace arbor::kernels
