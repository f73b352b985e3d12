// Mixtral weights converted to f32 for the CPU engine, loaded whole or in part: a router needs
// only the non-expert weights, an expert worker only its (layer, expert) pairs. Tensors that
// are not asked for are never read (the checkpoint is mmapped). Immutable after Load().
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/config.h"

namespace arbor::model {

struct ExpertKey {
  int layer = 0;
  int expert = 0;
  bool operator==(const ExpertKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ExpertKey& k) {
    return H::combine(std::move(h), k.layer, k.expert);
  }
};

// All matrices are row-major [out, in], as Hugging Face stores nn.Linear weights, so y = x W^T.
struct LayerWeights {
  std::vector<float> attn_norm;  // [hidden]
  std::vector<float> wqkv;       // [q_dim + 2 * kv_dim, hidden]: q_proj, k_proj, v_proj rows
  std::vector<float> wo;         // [hidden, q_dim]
  std::vector<float> ffn_norm;   // [hidden]
  std::vector<float> gate;       // [num_local_experts, hidden]
};

struct ExpertWeights {
  std::vector<float> w13;  // [2 * intermediate, hidden]: w1 rows, then w3 rows
  std::vector<float> w2;   // [hidden, intermediate]
};

struct NonExpertWeights {
  std::vector<float> embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to embed
  const float* lm_head_data() const { return lm_head.empty() ? embed.data() : lm_head.data(); }
};

struct LoadOptions {
  bool non_expert = true;
  // nullopt: every expert of every layer; otherwise exactly these pairs (may be empty).
  std::optional<std::vector<ExpertKey>> experts;
};

class ModelWeights {
 public:
  // Reads what `options` asks for. Errors name the file and tensor (missing, wrong shape) or
  // the bad (layer, expert) pair (out of range).
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const Checkpoint& ckpt,
                                                            const LoadOptions& options);

  const ModelConfig& config() const { return config_; }

  // nullptr when the non-expert weights were not loaded.
  const NonExpertWeights* non_expert() const { return non_expert_.get(); }

  // nullptr when (layer, expert) was not loaded.
  const ExpertWeights* expert(int layer, int expert) const;

  size_t num_experts_loaded() const { return experts_.size(); }
  // The loaded (layer, expert) pairs, sorted.
  std::vector<ExpertKey> experts_loaded() const;

 private:
  explicit ModelWeights(const ModelConfig& config) : config_(config) {}

  ModelConfig config_;
  std::unique_ptr<NonExpertWeights> non_expert_;
  absl::flat_hash_map<ExpertKey, std::unique_ptr<ExpertWeights>> experts_;
};

}  // namespace arbor::model
