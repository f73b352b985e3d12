// A binary that links libprotobuf (through the gRPC protos) can load and use the tokenizer:
// SentencePiece's bundled protobuf stays inside its module.
#include "arbor/model/tokenizer.h"
#include "arbor/v1/router.pb.h"
#include "gtest/gtest.h"

namespace arbor::model {
namespace {

TEST(TokenizerWithGrpcTest, EncodesInAProcessThatUsesProtobuf) {
  v1::TokenizeRequest req;
  req.set_text("4 9 10 13");
  v1::TokenizeRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(req.SerializeAsString()));
  auto tok = Tokenizer::Load(std::string(ARBOR_SOURCE_DIR) + "/models/test-moe", 1, 2);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // The ids Python's SentencePiece gives (models/test-moe/reference.json, prompt 0).
  EXPECT_EQ((*tok)->Encode(parsed.text()), (std::vector<int>{1, 291, 282, 280, 273}));
}

}  // namespace
}  // namespace arbor::model
