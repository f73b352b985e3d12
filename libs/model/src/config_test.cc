#include "arbor/model/config.h"

#include "gtest/gtest.h"

namespace arbor::model {
namespace {

// The shape of the published Mixtral-8x7B config.json.
constexpr char kMixtral8x7b[] = R"({
  "architectures": ["MixtralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
  "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
  "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.36.0.dev0", "use_cache": true, "vocab_size": 32000})";

TEST(ModelConfigTest, ParsesMixtral8x7b) {
  auto c = ModelConfig::Parse(kMixtral8x7b, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->head_dim, 128);  // hidden / heads when head_dim is absent
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_FALSE(c->sliding_window.has_value());
  EXPECT_EQ(c->q_dim(), 4096);
  EXPECT_EQ(c->kv_dim(), 1024);
}

TEST(ModelConfigTest, ExplicitHeadDimWins) {
  std::string text = kMixtral8x7b;
  text.insert(1, R"("head_dim": 64,)");
  EXPECT_EQ(ModelConfig::Parse(text, "c.json")->head_dim, 64);
}

void ExpectError(const std::string& text, const std::string& needle) {
  auto c = ModelConfig::Parse(text, "dir/config.json");
  ASSERT_FALSE(c.ok()) << text;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("dir/config.json"), absl::string_view::npos) << c.status();
  EXPECT_NE(c.status().message().find(needle), absl::string_view::npos) << c.status();
}

std::string With(const std::string& field, const std::string& value) {
  auto j = std::string(kMixtral8x7b);
  const auto at = j.find("\"" + field + "\"");
  const auto colon = j.find(':', at);
  const auto end = j.find_first_of(",}", colon);
  return j.substr(0, colon + 1) + " " + value + j.substr(end);
}

TEST(ModelConfigTest, BadConfigsNameTheFileAndField) {
  ExpectError("{not json", "not valid JSON");
  ExpectError("[1, 2]", "not a JSON object");
  ExpectError(With("hidden_size", "null"), "hidden_size is missing");
  ExpectError(With("hidden_size", "\"4096\""), "hidden_size is not an integer");
  ExpectError(With("num_hidden_layers", "0"), "num_hidden_layers 0 out of range");
  ExpectError(With("num_key_value_heads", "5"), "num_key_value_heads 5 does not divide");
  ExpectError(With("num_experts_per_tok", "9"), "num_experts_per_tok 9 exceeds");
  ExpectError(With("torch_dtype", "\"int4\""), "int4");
  ExpectError(With("rms_norm_eps", "-1"), "rms_norm_eps");
  ExpectError(With("tie_word_embeddings", "1"), "tie_word_embeddings is not a boolean");
  ExpectError(With("vocab_size", "99999999999"), "vocab_size");
}

TEST(ModelConfigTest, MissingFileIsNotFoundAndNamesThePath) {
  auto c = ModelConfig::Load("/nonexistent/model");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/model/config.json"), absl::string_view::npos);
}

}  // namespace
}  // namespace arbor::model
