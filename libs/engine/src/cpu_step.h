// The CPU side of Engine::Step: per layer RMSNorm, the QKV GEMM (OpenBLAS), RoPE, the KV write
// into the host blocks, tree attention over the step's chunks, the output projection, RMSNorm,
// the gate and top-k, and the experts through the ExpertBackend; then the final norm and the LM
// head of the wanted rows. f32 throughout. Private to the engine.
#pragma once

#include <vector>

#include "arbor/kernels/rope.h"
#include "step_backend.h"

namespace arbor::engine {

class CpuStep final : public StepBackend {
 public:
  // Buffers sized for options.max_batch_tokens tokens and options.max_logit_rows logits rows.
  CpuStep(const model::ModelWeights* weights, ExpertBackend* experts, kvcache::KvTree* kv,
          const EngineOptions& options);

  absl::Status Run(const StepPlan& plan, float* logits) override;

 private:
  absl::Status Layer(int layer, const StepPlan& plan);
  void WriteKv(int layer, const StepPlan& plan);

  const model::ModelConfig config_;
  const model::NonExpertWeights* w_;
  ExpertBackend* experts_;
  kvcache::KvTree* kv_;
  kernels::RopeTable rope_;

  // N = max_batch_tokens, R = max_logit_rows.
  std::vector<float> h_;               // [N, hidden] normed
  std::vector<float> qkv_;             // [N, q_dim + 2 kv_dim]
  std::vector<float> attn_;            // [N, q_dim]
  std::vector<float> router_;          // [N, n_experts]
  std::vector<int> expert_ids_;        // [N, top_k]
  std::vector<float> expert_w_;        // [N, top_k]
  std::vector<float> attn_ws_;         // tree attention workspace
  std::vector<float> last_;            // [R, hidden] final-normed wanted rows
  std::vector<const float*> block_k_;  // the chunks' blocks at this layer's K
  std::vector<const float*> block_v_;  // the chunks' blocks at this layer's V
};

}  // namespace arbor::engine
