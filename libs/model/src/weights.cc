#include "arbor/model/weights.h"

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <utility>

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

// One matrix of `cols` columns stacked from `parts` ({tensor name, rows}, in order): 16-bit when
// every part is stored in the same 16-bit type and `keep_16bit`, else f32.
absl::Status ReadMatrix(const Checkpoint& ckpt, bool keep_16bit, int64_t cols,
                        std::initializer_list<std::pair<std::string, int64_t>> parts, Matrix& m) {
  std::optional<DType> common;
  m.rows = 0;
  for (const auto& [name, rows] : parts) {
    ARBOR_ASSIGN_OR_RETURN(const TensorInfo* info, ckpt.Find(name));
    if (common && *common != info->dtype) keep_16bit = false;
    common = info->dtype;
    m.rows += rows;
  }
  m.cols = cols;
  m.dtype = keep_16bit && common ? *common : DType::kF32;
  const size_t numel = static_cast<size_t>(m.rows * cols);
  if (m.dtype == DType::kF32) {
    m.f32.resize(numel);
  } else {
    m.half.resize(numel);
  }
  int64_t row = 0;
  for (const auto& [name, rows] : parts) {
    void* dst = m.dtype == DType::kF32 ? static_cast<void*>(m.f32.data() + row * cols)
                                       : m.half.data() + row * cols;
    ARBOR_RETURN_IF_ERROR(ckpt.Read(name, {rows, cols}, m.dtype, dst));
    row += rows;
  }
  if (static_cast<int64_t>(numel) <= kernels::kSmallMatrixElements) {
    if (m.dtype != DType::kF32) {
      m.f32.resize(numel);  // the products past kernels::kPackedMaxRows run on this copy
      ConvertToF32(m.dtype, m.half.data(), numel, m.f32.data());
    }
    const int n = static_cast<int>(m.rows), k = static_cast<int>(m.cols);
    m.packed.resize(kernels::PackedFloats(n, k));
    kernels::PackWeights(m.view(), n, k, m.packed.data());
  }
  return absl::OkStatus();
}

absl::Status LoadLayer(const Checkpoint& ckpt, bool keep_16bit, int l, LayerWeights& w) {
  const ModelConfig& c = ckpt.config();
  const std::string p = absl::StrCat("model.layers.", l, ".");
  const int64_t h = c.hidden_size;
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "input_layernorm.weight", {h}, w.attn_norm));
  ARBOR_RETURN_IF_ERROR(ReadMatrix(ckpt, keep_16bit, h,
                                   {{p + "self_attn.q_proj.weight", c.q_dim()},
                                    {p + "self_attn.k_proj.weight", c.kv_dim()},
                                    {p + "self_attn.v_proj.weight", c.kv_dim()}},
                                   w.wqkv));
  ARBOR_RETURN_IF_ERROR(
      ReadMatrix(ckpt, keep_16bit, c.q_dim(), {{p + "self_attn.o_proj.weight", h}}, w.wo));
  ARBOR_RETURN_IF_ERROR(Read(ckpt, p + "post_attention_layernorm.weight", {h}, w.ffn_norm));
  ARBOR_RETURN_IF_ERROR(ReadMatrix(
      ckpt, keep_16bit, h, {{p + "block_sparse_moe.gate.weight", c.num_local_experts}}, w.gate));
  return absl::OkStatus();
}

absl::Status LoadExpert(const Checkpoint& ckpt, bool keep_16bit, ExpertKey key, ExpertWeights& w) {
  const ModelConfig& c = ckpt.config();
  const std::string p =
      absl::StrCat("model.layers.", key.layer, ".block_sparse_moe.experts.", key.expert, ".");
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  ARBOR_RETURN_IF_ERROR(
      ReadMatrix(ckpt, keep_16bit, h, {{p + "w1.weight", inter}, {p + "w3.weight", inter}}, w.w13));
  ARBOR_RETURN_IF_ERROR(ReadMatrix(ckpt, keep_16bit, inter, {{p + "w2.weight", h}}, w.w2));
  return absl::OkStatus();
}

}  // namespace

std::vector<float> Matrix::ToF32() const {
  if (dtype == DType::kF32 || !f32.empty()) return f32;
  std::vector<float> out(half.size());
  ConvertToF32(dtype, half.data(), half.size(), out.data());
  return out;
}

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
      ARBOR_RETURN_IF_ERROR(LoadLayer(ckpt, options.keep_16bit, l, ne->layers[l]));
    }
    ARBOR_RETURN_IF_ERROR(Read(ckpt, "model.norm.weight", {h}, ne->final_norm));
    if (!c.tie_word_embeddings) {
      ARBOR_RETURN_IF_ERROR(
          ReadMatrix(ckpt, options.keep_16bit, h, {{"lm_head.weight", v}}, ne->lm_head));
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
    ARBOR_RETURN_IF_ERROR(LoadExpert(ckpt, options.keep_16bit, key, *w));
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
