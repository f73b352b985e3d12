#include "step_backend.h"

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/decode_attention.h"
#include "arbor/kernels/gpu.h"
#include "cpu_step.h"

#ifdef ARBOR_HAVE_CUDA
#include "cuda_step.h"
#endif

namespace arbor::engine {

absl::StatusOr<std::unique_ptr<StepBackend>> CreateStepBackend(const model::ModelWeights* weights,
                                                               ExpertBackend* experts,
                                                               kvcache::KvTree* kv,
                                                               const EngineOptions& options) {
  if (options.backend == "cpu") {
    return std::make_unique<CpuStep>(weights, experts, kv, options);
  }
  if (options.backend != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("engine backend \"", options.backend, "\" is not auto, cpu or cuda"));
  }
#ifdef ARBOR_HAVE_CUDA
  if (kernels::CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("engine backend cuda: no CUDA device is visible");
  }
  const model::ModelConfig& c = weights->config();
  if (absl::Status tiles =
          kernels::CheckTreeDecodeShape(c.num_attention_heads, c.num_key_value_heads, c.head_dim);
      !tiles.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("engine backend cuda: ", tiles.message()));
  }
  ARBOR_ASSIGN_OR_RETURN(std::unique_ptr<CudaStep> step,
                         CudaStep::Create(weights, experts, kv, options));
  return step;
#else
  return absl::FailedPreconditionError(
      "engine backend cuda: this build has no CUDA (ARBOR_ENABLE_CUDA=OFF)");
#endif
}

}  // namespace arbor::engine
