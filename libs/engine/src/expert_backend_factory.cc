#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/kernels/gpu.h"
#ifdef ARBOR_HAVE_CUDA
#include "arbor/engine/cuda_expert_backend.h"
#endif

namespace arbor::engine {

absl::StatusOr<std::unique_ptr<ExpertBackend>> CreateExpertBackend(
    const model::ModelWeights* weights, int max_tokens, const std::string& name) {
  if (name != "cpu" && name != "cuda" && name != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("backend \"", name, "\" is not one of auto, cpu, cuda"));
  }
  const bool gpu = kernels::CudaDeviceCount() > 0;
  if (name == "cuda" && !gpu) {
    return absl::FailedPreconditionError(
        kernels::CudaBuilt() ? "backend cuda: no CUDA device is visible"
                             : "backend cuda: this build has no CUDA (ARBOR_ENABLE_CUDA=OFF)");
  }
#ifdef ARBOR_HAVE_CUDA
  if (name == "cuda" || (name == "auto" && gpu)) {
    ARBOR_ASSIGN_OR_RETURN(auto b, CudaExpertBackend::Create(weights, {.max_tokens = max_tokens}));
    return std::unique_ptr<ExpertBackend>(std::move(b));
  }
#endif
  ARBOR_ASSIGN_OR_RETURN(auto b, CpuExpertBackend::Create(weights, max_tokens));
  return std::unique_ptr<ExpertBackend>(std::move(b));
}

}  // namespace arbor::engine
