// Everything needed to run a model folder in one process: checkpoint, all weights, tokenizer,
// CPU experts and an engine. What `arbor generate`, the bench and the tests use; the services
// split the same parts across processes.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "arbor/engine/engine.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/tokenizer.h"
#include "arbor/model/weights.h"

namespace arbor::engine {

struct LocalModel {
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<model::ModelWeights> weights;
  std::unique_ptr<model::Tokenizer> tokenizer;  // null when the folder has no tokenizer.model
  std::unique_ptr<CpuExpertBackend> experts;    // always built (the tests' CPU reference)
  // With options.backend "cuda" (or "auto" resolving to it): the experts on the GPU too
  // (CudaExpertBackend), which the engine then uses; null otherwise.
  std::unique_ptr<ExpertBackend> device_experts;
  std::unique_ptr<Engine> engine;

  // Loads `dir`. Errors name the file (and tensor) at fault; backend errors as Engine::Create.
  // `load` says which weights and in what type (its expert and non-expert choices are
  // ignored: a local model loads every weight).
  static absl::StatusOr<std::unique_ptr<LocalModel>> Load(const std::string& dir,
                                                          const EngineOptions& options,
                                                          model::LoadOptions load = {});
};

}  // namespace arbor::engine
