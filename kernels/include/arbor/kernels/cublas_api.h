// cuBLAS, loaded with dlopen on first use instead of linked (CUDA builds only).
//
// Why: every service links the kernels, but only a process that asks for the GPU needs cuBLAS,
// which is about half a gigabyte of libraries and carries ~94 KB of static TLS. Linked, its TLS
// sits at the top of every thread's stack in every process, GPU or not (that is what once broke
// civetweb's 100 KB-stack /metrics threads; see rpc/metrics_server.h); dlopen'ed, it is loaded
// by the backends that use it and its TLS is allocated per thread on demand.
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
