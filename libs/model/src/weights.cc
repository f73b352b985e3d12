#include "arbor/model/weights.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::model {
namespace {

// Reads one tensor of `shape` into dst[offset : offset + numel].
absl::Status Read(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> shape,
                  std::vector<float>& dst, size_t offset = 0) {
  size_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<size_t>(d);
  if (dst.size() < offset + numel) dst.resize(offset + numel);
  return ckpt.ReadF32(name, shape, dst.data() + offset);
}

absl::Status LoadLayer(const Checkpoint& ckpt, int l, LayerWeights& w) {
  const ModelConfig& c = ckpt.config();
  const std::string p = absl::StrCat("model.layers.", l, ".");
  const int64_t h = c.hidden_size;
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "input_layernorm.weight", {h}, w.attn_norm));
  w.wqkv.resize(static_cast<size_t>(c.q_dim() + 2 * c.kv_dim()) * h);
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "self_attn.q_proj.weight", {c.q_dim(), h}, w.wqkv));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "self_attn.k_proj.weight", {c.kv_dim(), h}, w.wqkv,
                             static_cast<size_t>(c.q_dim()) * h));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "self_attn.v_proj.weight", {c.kv_dim(), h}, w.wqkv,
                             static_cast<size_t>(c.q_dim() + c.kv_dim()) * h));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "self_attn.o_proj.weight", {h, c.q_dim()}, w.wo));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "post_attention_layernorm.weight", {h}, w.ffn_norm));
  ARBOR_RETURN_IF_ERROR(
      Read(ckpt, p + "block_sparse_moe.gate.weight", {c.num_local_experts, h}, w.gate));
  return absl::OkStatus();
}

absl::Status LoadExpert(const Checkpoint& ckpt, ExpertKey key, ExpertWeights& w) {
  const ModelConfig& c = ckpt.config();
  const std::string p =
      absl::StrCat("model.layers.", key.layer, ".block_sparse_moe.experts.", key.expert, ".");
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  w.w13.resize(static_cast<size_t>(2 * inter * h));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "w1.weight", {inter, h}, w.w13));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "w3.weight", {inter, h}, w.w13, inter * h));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "w2.weight", {h, inter}, w.w2));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const Checkpoint& ckpt,
                                                                 const LoadOptions& options) {
  const ModelConfig& c = ckpt.config();
  std::unique_ptr<ModelWeights> weights(new ModelWeights(c));

  if (options.non_expert) {
    auto ne = std::make_unique<NonExpertWeights>();
    const int64_t h = c.hidden_size, v = c.vocab_size;
    ARBOR_RETURN_IF_ERROR(Read(ckpt, "model.embed_tokens.weight", {v, h}, ne->embed));
    ne->layers.resize(c.num_hidden_layers);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      ARBOR_RETURN_IF_ERROR(LoadLayer(ckpt, l, ne->layers[l]));
    }
    ARBOR_RETURN_IF_ERROR(Read(ckpt, "model.norm.weight", {h}, ne->final_norm));
    if (!c.tie_word_embeddings) {
      ARBOR_RETURN_IF_ERROR(Read(ckpt, "lm_head.weight", {v, h}, ne->lm_head));
    }
    weights->non_expert_ = std::move(ne);
  }

  std::vector<ExpertKey> keys;
  if (options.experts) {
    keys = *options.experts;
  } else {
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      for (int e = 0; e < c.num_local_experts; ++e) keys.push_back({l, e});
    }
  }
  for (const ExpertKey& key : keys) {
    if (key.layer < 0 || key.layer >= c.num_hidden_layers || key.expert < 0 ||
        key.expert >= c.num_local_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert (layer ", key.layer, ", expert ", key.expert, ") out of range: the model has ",
          c.num_hidden_layers, " layers of ", c.num_local_experts, " experts"));
    }
    if (weights->experts_.contains(key)) continue;
    auto w = std::make_unique<ExpertWeights>();
    ARBOR_RETURN_IF_ERROR(LoadExpert(ckpt, key, *w));
    weights->experts_.emplace(key, std::move(w));
  }
  return weights;
}

const ExpertWeights* ModelWeights::expert(int layer, int expert) const {
  auto it = experts_.find(ExpertKey{layer, expert});
  return it == experts_.end() ? nullptr : it->second.get();
}

std::vector<ExpertKey> ModelWeights::experts_loaded() const {
  std::vector<ExpertKey> keys;
  keys.reserve(experts_.size());
  for (const auto& [key, w] : experts_) keys.push_back(key);
  std::sort(keys.begin(), keys.end(), [](const ExpertKey& a, const ExpertKey& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
  });
  return keys;
}

}  // namespace arbor::model
