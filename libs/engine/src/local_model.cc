#include "arbor/engine/local_model.h"

#include <filesystem>

#include "arbor/common/status_macros.h"

namespace arbor::engine {

absl::StatusOr<std::unique_ptr<LocalModel>> LocalModel::Load(const std::string& dir,
                                                             const EngineOptions& options,
                                                             model::LoadOptions load) {
  auto m = std::make_unique<LocalModel>();
  ARBOR_ASSIGN_OR_RETURN(m->checkpoint, model::Checkpoint::Open(dir));
  load.non_expert = true;
  load.experts.reset();
  ARBOR_ASSIGN_OR_RETURN(m->weights, model::ModelWeights::Load(*m->checkpoint, load));
  const model::ModelConfig& c = m->checkpoint->config();
  if (std::filesystem::exists(dir + "/tokenizer.model")) {
    ARBOR_ASSIGN_OR_RETURN(m->tokenizer,
                           model::Tokenizer::Load(dir, c.bos_token_id, c.eos_token_id));
  }
  ARBOR_ASSIGN_OR_RETURN(m->experts,
                         CpuExpertBackend::Create(m->weights.get(), options.max_batch_tokens));
  ExpertBackend* experts = m->experts.get();
  EngineOptions resolved = options;  // "auto" decided once, here: the experts follow the engine
  resolved.backend = ResolveEngineBackend(options.backend, c);
  if (resolved.backend == "cuda") {
    ARBOR_ASSIGN_OR_RETURN(m->device_experts,
                           CreateExpertBackend(m->weights.get(), options.max_batch_tokens, "cuda"));
    experts = m->device_experts.get();
  }
  ARBOR_ASSIGN_OR_RETURN(m->engine, Engine::Create(m->weights.get(), experts, resolved));
  return m;
}

}  // namespace arbor::engine
