#include "arbor/model/tokenizer.h"

#include "gtest/gtest.h"
#include "test_util.h"

namespace arbor::model {
namespace {

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Tokenizer::Load(kModel, 1, 2);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = std::move(*t);
    for (int id = 0; id < tok_->vocab_size(); ++id) {
      const std::string b = tok_->PieceBytes(id);
      if (b.size() == 1 && static_cast<unsigned char>(b[0]) >= 0x80)
        byte_id_[(unsigned char)b[0]] = id;
    }
  }
  int Byte(unsigned char b) { return byte_id_[b]; }

  std::unique_ptr<Tokenizer> tok_;
  int byte_id_[256] = {};
};

TEST_F(TokenizerTest, AddsBosAsConfiguredAndRoundTrips) {
  const auto ids = tok_->Encode("4 9 10 13");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok_->Decode(ids), "4 9 10 13");
  EXPECT_NE(tok_->Encode("4 9", /*add_special=*/false)[0], 1);
}

TEST_F(TokenizerTest, NonAsciiTextFallsBackToBytesAndRoundTrips) {
  const std::string text = "24 ✓ ü";
  EXPECT_EQ(tok_->Decode(tok_->Encode(text)), text);
}

TEST_F(TokenizerTest, StreamDecoderHoldsSplitCharactersAndKeepsSpaces) {
  StreamDecoder dec(tok_.get());
  const auto ids = tok_->Encode(" tree ✓", /*add_special=*/false);
  std::string out;
  for (int id : ids) out += dec.Push(id);
  out += dec.Flush();
  EXPECT_EQ(out, " tree ✓");
  // "✓" is E2 9C 93: nothing comes out until its last byte arrives.
  StreamDecoder split(tok_.get());
  EXPECT_EQ(split.Push(Byte(0xE2)), "");
  EXPECT_EQ(split.Push(Byte(0x9C)), "");
  EXPECT_EQ(split.Push(Byte(0x93)), "✓");
}

TEST_F(TokenizerTest, StreamDecoderReplacesInvalidBytesSoOutputIsValidUtf8) {
  StreamDecoder dec(tok_.get());
  EXPECT_EQ(dec.Push(Byte(0x93)), "\xEF\xBF\xBD");  // lone continuation byte
  EXPECT_EQ(dec.Push(Byte(0xE2)), "");              // may still complete...
  EXPECT_EQ(dec.Push(Byte(0xC3)), "\xEF\xBF\xBD");  // ...but does not; C3 is held
  EXPECT_EQ(dec.Flush(), "\xEF\xBF\xBD");           // C3 never completes
  EXPECT_EQ(dec.Push(Byte(0xC0)), "\xEF\xBF\xBD");  // never valid (overlong lead)
}

TEST(TokenizerLoadTest, MissingOrCorruptModelNamesTheFile) {
  auto missing = Tokenizer::Load("/nonexistent", std::nullopt, std::nullopt);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto dir = testing::CopyModel(kModel, "tok");
  testing::WriteFile(dir / "tokenizer.model", "not a protobuf");
  auto corrupt = Tokenizer::Load(dir.string(), std::nullopt, std::nullopt);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_NE(corrupt.status().message().find("tokenizer.model"), absl::string_view::npos);
}

TEST(TokenizerLoadTest, TokenizerConfigControlsBos) {
  auto dir = testing::CopyModel(kModel, "tokcfg");
  testing::WriteFile(dir / "tokenizer_config.json", R"({"add_bos_token": false})");
  auto t = Tokenizer::Load(dir.string(), 1, 2);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE((*t)->Encode("4 9")[0], 1);
  testing::WriteFile(dir / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
  auto bad = Tokenizer::Load(dir.string(), 1, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("add_bos_token"), absl::string_view::npos);
  EXPECT_FALSE(Tokenizer::Load(kModel, 99999, 2).ok());  // BOS outside the vocabulary
}

}  // namespace
}  // namespace arbor::model
