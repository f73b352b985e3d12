// Mixtral weights for the engines, loaded whole or in part: a router needs only the non-expert
// weights, an expert worker only its (layer, expert) pairs. Tensors that are not asked for are
// never read (the checkpoint is mmapped). The projection matrices stay in a 16-bit checkpoint's
// own type (half the bytes a decoded token streams; the kernels accumulate in f32); norms and
// embeddings are f32. Immutable after Load().
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "arbor/kernels/matmul.h"
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

// A projection matrix, row-major [rows, cols] ([out, in], as Hugging Face stores nn.Linear
// weights, so y = x W^T), in f32 or in the checkpoint's 16-bit type.
struct Matrix {
  DType dtype = DType::kF32;
  int64_t rows = 0, cols = 0;
  std::vector<float> f32;      // dtype kF32; for a 16-bit matrix of at most
                               // kernels::kSmallMatrixElements, the same elements in f32 too
  std::vector<uint16_t> half;  // dtype kBF16 or kF16
  // A matrix of at most kernels::kSmallMatrixElements, any dtype: its elements in f32 as
  // kernels::PackWeights lays them out (compute-bound products of a small matrix run on it).
  std::vector<float> packed;

  kernels::WeightView view() const {
    const float* packed_or_null = packed.empty() ? nullptr : packed.data();
    if (dtype == DType::kF32) return {f32.data(), dtype, packed_or_null};
    return {half.data(), dtype, packed_or_null, f32.empty() ? nullptr : f32.data()};
  }
  bool empty() const { return rows == 0; }
  // Bytes of the elements in `dtype` (what a product that streams them reads).
  size_t bytes() const { return static_cast<size_t>(rows * cols) * DTypeSize(dtype); }
  // The elements as f32 (a copy where they are 16-bit): what the CUDA backends upload.
  std::vector<float> ToF32() const;
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [hidden]
  Matrix wqkv;                   // [q_dim + 2 * kv_dim, hidden]: q_proj, k_proj, v_proj rows
  Matrix wo;                     // [hidden, q_dim]
  std::vector<float> ffn_norm;   // [hidden]
  Matrix gate;                   // [num_local_experts, hidden]
};

struct ExpertWeights {
  Matrix w13;  // [2 * intermediate, hidden]: w1 rows, then w3 rows
  Matrix w2;   // [hidden, intermediate]
};

struct NonExpertWeights {
  std::vector<float> embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  Matrix lm_head;                 // [vocab, hidden]; empty when tied to embed
  // The output projection: lm_head, or the (f32) embeddings when tied.
  kernels::WeightView lm_head_view() const {
    return lm_head.empty() ? kernels::WeightView{embed.data(), DType::kF32} : lm_head.view();
  }
};

struct LoadOptions {
  bool non_expert = true;
  // nullopt: every expert of every layer; otherwise exactly these pairs (may be empty).
  std::optional<std::vector<ExpertKey>> experts;
  // Projection matrices of a 16-bit checkpoint stay 16-bit; false converts them to f32 (as
  // f32 checkpoints are), e.g. to compare the two.
  bool keep_16bit = true;
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
