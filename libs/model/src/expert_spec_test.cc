#include "arbor/model/expert_spec.h"

#include "gtest/gtest.h"

namespace arbor::model {
namespace {

TEST(ExpertSpecTest, ParsesRangesWildcardsAndAll) {
  auto k = ParseExpertSpec("1:2-3,0:*", 2, 4);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(*k, (std::vector<ExpertKey>{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}}));
  EXPECT_EQ(ParseExpertSpec("all", 2, 4)->size(), 8u);
  EXPECT_EQ(*ParseExpertSpec("*:1,0:1", 2, 4), (std::vector<ExpertKey>{{0, 1}, {1, 1}}));
  EXPECT_EQ(FormatExpertSpec(*k), "0:0-3,1:2-3");
}

TEST(ExpertSpecTest, BadItemsAreNamed) {
  for (const char* bad : {"", "0", "0:4", "2:0", "0:3-1", "a:1", "0:1-2-3", "-1:0"}) {
    auto k = ParseExpertSpec(bad, 2, 4);
    ASSERT_FALSE(k.ok()) << bad;
    EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_NE(ParseExpertSpec("0:1,9:9", 2, 4).status().message().find("\"9:9\""),
            absl::string_view::npos);
}

TEST(ExpertSpecTest, EvenSplitCoversEveryPairOnce) {
  const auto shards = SplitExpertsEvenly(3, 8, 3);
  ASSERT_EQ(shards.size(), 3u);
  size_t total = 0;
  for (const auto& s : shards) {
    total += s.size();
    EXPECT_GE(s.size(), 6u);  // 24 pairs over 3 workers, contiguous experts per layer
  }
  EXPECT_EQ(total, 24u);
  EXPECT_EQ(FormatExpertSpec(shards[0]), "0:0-2,1:0-2,2:0-2");
}

}  // namespace
}  // namespace arbor::model
