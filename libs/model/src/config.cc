#include "arbor/model/config.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace arbor::model {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, " ", what));
}

// Reads a required (or, with `fallback`, optional) positive integer field in [1, max].
absl::StatusOr<int> GetInt(const json& j, absl::string_view source, const char* field,
                           std::optional<int> fallback = std::nullopt, int64_t min = 1,
                           int64_t max = std::numeric_limits<int32_t>::max()) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return FieldError(source, field, "is missing");
  }
  if (!it->is_number_integer()) return FieldError(source, field, "is not an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) {
    return FieldError(source, field, absl::StrCat(v, " out of range [", min, ", ", max, "]"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<float> GetPositiveFloat(const json& j, absl::string_view source, const char* field,
                                       float fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(source, field, "is not a number");
  const double v = it->get<double>();
  if (!(v > 0) || v > 1e30) return FieldError(source, field, absl::StrCat(v, " must be > 0"));
  return static_cast<float>(v);
}

absl::StatusOr<std::optional<int>> GetOptionalTokenId(const json& j, absl::string_view source,
                                                      const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<int>();
  // Some configs list several EOS ids; Arbor stops on the first.
  const json& v = it->is_array() && !it->empty() ? (*it)[0] : *it;
  if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
      v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    return FieldError(source, field, "is not a non-negative integer");
  }
  return std::optional<int>(v.get<int>());
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::Parse(absl::string_view json_text,
                                               absl::string_view source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": top level is not a JSON object"));
  }
  ModelConfig c;
  ARBOR_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, source, "hidden_size"));
  ARBOR_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, source, "intermediate_size"));
  ARBOR_ASSIGN_OR_RETURN(c.num_hidden_layers, GetInt(j, source, "num_hidden_layers"));
  ARBOR_ASSIGN_OR_RETURN(c.num_attention_heads, GetInt(j, source, "num_attention_heads"));
  ARBOR_ASSIGN_OR_RETURN(c.num_key_value_heads,
                         GetInt(j, source, "num_key_value_heads", c.num_attention_heads));
  ARBOR_ASSIGN_OR_RETURN(c.num_local_experts, GetInt(j, source, "num_local_experts"));
  ARBOR_ASSIGN_OR_RETURN(c.num_experts_per_tok, GetInt(j, source, "num_experts_per_tok"));
  ARBOR_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, source, "vocab_size"));
  ARBOR_ASSIGN_OR_RETURN(c.max_position_embeddings,
                         GetInt(j, source, "max_position_embeddings", 32768));
  ARBOR_ASSIGN_OR_RETURN(c.rms_norm_eps, GetPositiveFloat(j, source, "rms_norm_eps", 1e-5f));
  ARBOR_ASSIGN_OR_RETURN(c.rope_theta, GetPositiveFloat(j, source, "rope_theta", 1e6f));
  ARBOR_ASSIGN_OR_RETURN(c.bos_token_id, GetOptionalTokenId(j, source, "bos_token_id"));
  ARBOR_ASSIGN_OR_RETURN(c.eos_token_id, GetOptionalTokenId(j, source, "eos_token_id"));

  if (c.hidden_size % c.num_attention_heads != 0 && !j.contains("head_dim")) {
    return FieldError(source, "hidden_size",
                      absl::StrCat(c.hidden_size, " is not a multiple of num_attention_heads ",
                                   c.num_attention_heads, " and head_dim is not given"));
  }
  ARBOR_ASSIGN_OR_RETURN(
      c.head_dim, GetInt(j, source, "head_dim", c.hidden_size / c.num_attention_heads, 1, 1024));
  if (c.head_dim % 2 != 0) {
    return FieldError(source, "head_dim", absl::StrCat(c.head_dim, " must be even for RoPE"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat(c.num_key_value_heads, " does not divide num_attention_heads ",
                                   c.num_attention_heads));
  }
  if (c.num_experts_per_tok > c.num_local_experts) {
    return FieldError(
        source, "num_experts_per_tok",
        absl::StrCat(c.num_experts_per_tok, " exceeds num_local_experts ", c.num_local_experts));
  }
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    ARBOR_ASSIGN_OR_RETURN(int window, GetInt(j, source, "sliding_window"));
    c.sliding_window = window;
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return FieldError(source, "tie_word_embeddings", "is not a boolean");
    c.tie_word_embeddings = it->get<bool>();
  }
  if (auto it = j.find("torch_dtype"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return FieldError(source, "torch_dtype", "is not a string");
    auto dtype = ParseTorchDType(it->get<std::string>());
    if (!dtype.ok())
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", dtype.status().message()));
    c.torch_dtype = *dtype;
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::Load(const std::string& dir) {
  const std::string path = dir + "/config.json";
  ARBOR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return Parse(text, path);
}

}  // namespace arbor::model
