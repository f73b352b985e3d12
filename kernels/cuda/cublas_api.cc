#include "arbor/kernels/cublas_api.h"

#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace arbor::kernels {
namespace {

absl::StatusOr<CublasApi> Load() {
  const std::string name = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) lib = dlopen("libcublas.so", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot load ", name, ": ", dlerror()));
  }
  CublasApi api;
  absl::Status missing;
  auto sym = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
    if (fn == nullptr && missing.ok()) {
      missing = absl::FailedPreconditionError(absl::StrCat(name, " has no ", symbol));
    }
  };
  sym(api.create, "cublasCreate_v2");
  sym(api.destroy, "cublasDestroy_v2");
  sym(api.set_stream, "cublasSetStream_v2");
  sym(api.set_math_mode, "cublasSetMathMode");
  sym(api.gemm_ex, "cublasGemmEx");
  sym(api.gemm_grouped_batched_ex, "cublasGemmGroupedBatchedEx");
  sym(api.sgemm, "cublasSgemm_v2");
  sym(api.status_name, "cublasGetStatusName");
  sym(api.status_string, "cublasGetStatusString");
  if (!missing.ok()) return missing;
  return api;  // the library stays loaded for the life of the process
}

}  // namespace

absl::StatusOr<const CublasApi*> Cublas() {
  static const absl::StatusOr<CublasApi> api = Load();
  if (!api.ok()) return api.status();
  return &*api;
}

}  // namespace arbor::kernels
