// The Mixtral-architecture hyper-parameters Arbor reads from a Hugging Face `config.json`.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/common/dtype.h"

namespace arbor::model {

struct ModelConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // config's head_dim when present, else hidden_size / num_attention_heads
  int num_local_experts = 0;
  int num_experts_per_tok = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 1e6f;
  bool tie_word_embeddings = false;
  DType torch_dtype = DType::kBF16;
  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;
  std::optional<int> sliding_window;  // null in most Mixtral configs; not applied yet

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }

  // Parses and validates config.json text. `source` names the file in error messages, e.g.
  // "models/x/config.json: num_key_value_heads 3 does not divide num_attention_heads 8".
  static absl::StatusOr<ModelConfig> Parse(absl::string_view json_text, absl::string_view source);

  // Reads `<dir>/config.json`.
  static absl::StatusOr<ModelConfig> Load(const std::string& dir);
};

}  // namespace arbor::model
