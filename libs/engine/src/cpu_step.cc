#include "cpu_step.h"

#include <algorithm>
#include <cmath>

#include "arbor/common/status_macros.h"
#include "arbor/kernels/gating.h"
#include "arbor/kernels/matmul.h"
#include "arbor/kernels/rms_norm.h"
#include "arbor/kernels/tree_attention.h"

namespace arbor::engine {

using kernels::MatMulWT;

CpuStep::CpuStep(const model::ModelWeights* weights, ExpertBackend* experts, kvcache::KvTree* kv,
                 const EngineOptions& options)
    : config_(weights->config()),
      w_(weights->non_expert()),
      experts_(experts),
      kv_(kv),
      rope_(config_.head_dim, config_.rope_theta, options.max_seq_tokens) {
  const size_t n = options.max_batch_tokens, r = options.max_logit_rows, h = config_.hidden_size;
  const size_t k = config_.num_experts_per_tok;
  h_.resize(n * h);
  qkv_.resize(n * (config_.q_dim() + 2 * config_.kv_dim()));
  attn_.resize(n * config_.q_dim());
  router_.resize(n * config_.num_local_experts);
  expert_ids_.resize(n * k);
  expert_w_.resize(n * k);
  attn_ws_.resize(kernels::TreeAttentionParams::WorkspaceFloats(
      options.max_batch_tokens, options.max_batch_tokens, config_.num_attention_heads,
      config_.num_key_value_heads, config_.head_dim, options.kv_block_tokens));
  last_.resize(r * h);
  block_k_.reserve(ReservedChunkBlocks(options, kv->layout()));
  block_v_.reserve(block_k_.capacity());
}

absl::Status CpuStep::Run(const StepPlan& plan, float* logits) {
  block_k_.resize(plan.chunks->n_blocks());
  block_v_.resize(plan.chunks->n_blocks());
  for (int l = 0; l < config_.num_hidden_layers; ++l) ARBOR_RETURN_IF_ERROR(Layer(l, plan));

  // Final norm and LM head of the wanted rows.
  const int hidden = config_.hidden_size;
  for (int i = 0; i < plan.n_last; ++i) {
    kernels::RmsNormCpu({.x = plan.x + static_cast<size_t>(plan.last_rows[i]) * hidden,
                         .weight = w_->final_norm.data(),
                         .out = last_.data() + static_cast<size_t>(i) * hidden,
                         .n_rows = 1,
                         .dim = hidden,
                         .eps = config_.rms_norm_eps});
  }
  if (plan.n_last > 0) {
    MatMulWT(last_.data(), w_->lm_head_view(), logits, plan.n_last, config_.vocab_size, hidden,
             0.0f);
  }
  return absl::OkStatus();
}

// This layer's K and V of the new tokens (RoPE applied) into their slots in the KV tree's blocks.
void CpuStep::WriteKv(int layer, const StepPlan& plan) {
  const int hd = config_.head_dim, q_dim = config_.q_dim();
  const int qkv_dim = q_dim + 2 * config_.kv_dim();
  const kvcache::KvLayout& layout = kv_->layout();
  for (int t = 0; t < plan.n_tokens; ++t) {
    float* block = kv_->block_data(plan.slots[t].block);
    const float* kv = qkv_.data() + static_cast<size_t>(t) * qkv_dim + q_dim;  // [2, kv_heads, hd]
    for (int kvi = 0; kvi < 2; ++kvi) {
      for (int g = 0; g < config_.num_key_value_heads; ++g, kv += hd) {
        std::copy(kv, kv + hd, block + layout.head_row(layer, kvi, g, plan.slots[t].slot));
      }
    }
  }
}

absl::Status CpuStep::Layer(int layer, const StepPlan& plan) {
  const model::LayerWeights& lw = w_->layers[layer];
  const int n_tokens = plan.n_tokens, hidden = config_.hidden_size, hd = config_.head_dim;
  const int q_dim = config_.q_dim(), kv_dim = config_.kv_dim(), qkv_dim = q_dim + 2 * kv_dim;
  const kvcache::KvLayout& layout = kv_->layout();
  float* x = plan.x;

  auto norm_into_h = [&](const std::vector<float>& weight) {  // h = RMSNorm(x) * weight
    kernels::RmsNormCpu({.x = x,
                         .weight = weight.data(),
                         .out = h_.data(),
                         .n_rows = n_tokens,
                         .dim = hidden,
                         .eps = config_.rms_norm_eps});
  };

  // Attention block.
  norm_into_h(lw.attn_norm);
  MatMulWT(h_.data(), lw.wqkv.view(), qkv_.data(), n_tokens, qkv_dim, hidden, 0.0f);
  kernels::RopeParams rope{.x = qkv_.data(),
                           .positions = plan.positions,
                           .table = &rope_,
                           .n_tokens = n_tokens,
                           .n_heads = config_.num_attention_heads,
                           .row_stride = qkv_dim};
  kernels::RopeCpu(rope);  // queries
  rope.x = qkv_.data() + q_dim, rope.n_heads = config_.num_key_value_heads;
  kernels::RopeCpu(rope);  // keys

  WriteKv(layer, plan);
  const std::vector<int>& blocks = plan.chunks->block_ids();
  for (size_t b = 0; b < blocks.size(); ++b) {
    const float* block = kv_->block_data(blocks[b]);
    block_k_[b] = block + layout.offset(layer, 0);
    block_v_[b] = block + layout.offset(layer, 1);
  }
  kernels::TreeAttentionCpu({.q = qkv_.data(),
                             .q_row_stride = qkv_dim,
                             .out = attn_.data(),
                             .q_pos = plan.positions,
                             .n_tokens = n_tokens,
                             .n_heads = config_.num_attention_heads,
                             .n_kv_heads = config_.num_key_value_heads,
                             .head_dim = hd,
                             .scale = 1.0f / std::sqrt(static_cast<float>(hd)),
                             .chunks = plan.chunks->view(),
                             .block_k = block_k_.data(),
                             .block_v = block_v_.data(),
                             .block_tokens = layout.block_tokens,
                             .head_stride = layout.head_stride(),
                             .workspace = attn_ws_.data()});
  MatMulWT(attn_.data(), lw.wo.view(), x, n_tokens, hidden, q_dim, 1.0f);

  // MoE block: gate, top-k, experts (which add their weighted outputs into x).
  norm_into_h(lw.ffn_norm);
  MatMulWT(h_.data(), lw.gate.view(), router_.data(), n_tokens, config_.num_local_experts, hidden,
           0.0f);
  kernels::GatingCpu({.logits = router_.data(),
                      .expert_ids = expert_ids_.data(),
                      .weights = expert_w_.data(),
                      .n_tokens = n_tokens,
                      .n_experts = config_.num_local_experts,
                      .top_k = config_.num_experts_per_tok});
  return experts_->Run({.layer = layer,
                        .x = h_.data(),
                        .n_tokens = n_tokens,
                        .top_k = config_.num_experts_per_tok,
                        .expert_ids = expert_ids_.data(),
                        .weights = expert_w_.data()},
                       x);
}

}  // namespace arbor::engine
