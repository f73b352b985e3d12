#include "arbor/kvcache/paged_kv_cache.h"

#include "gtest/gtest.h"

namespace arbor::kvcache {
namespace {

KvLayout SmallLayout() { return KvLayout{2, 2, 4, 4}; }

TEST(KvLayoutTest, OffsetsFollowLayerKvHeadTokenDim) {
  const KvLayout l = SmallLayout();
  EXPECT_EQ(l.head_stride(), 16u);
  EXPECT_EQ(l.floats_per_block(), 2u * 2 * 2 * 16);
  EXPECT_EQ(l.offset(0, 1), 32u);  // V of layer 0 after K's two heads
  EXPECT_EQ(l.offset(1, 0), 64u);
  EXPECT_EQ(l.BlocksFor(0), 0);
  EXPECT_EQ(l.BlocksFor(4), 1);
  EXPECT_EQ(l.BlocksFor(5), 2);
}

TEST(PagedKvCacheTest, ReserveIsAllOrNothingAndReleaseReturnsBlocks) {
  auto cache = *PagedKvCache::Create(SmallLayout(), 5, 64);
  const SeqId a = cache->CreateSequence(), b = cache->CreateSequence();
  const SeqId both[2] = {a, b};
  const int small[2] = {8, 4};  // 2 + 1 blocks
  ASSERT_TRUE(cache->Reserve(both, small, 2).ok());
  EXPECT_EQ(cache->pool().used(), 3);

  const int big[2] = {12, 12};  // needs 1 + 2 more; only 2 free
  auto st = cache->Reserve(both, big, 2);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->pool().used(), 3);  // unchanged
  EXPECT_EQ(cache->blocks(a)->size(), 2u);
  EXPECT_EQ(cache->blocks(b)->size(), 1u);

  ASSERT_TRUE(cache->SetLength(a, 7).ok());
  EXPECT_EQ(cache->length(a), 7);
  EXPECT_EQ(cache->SetLength(a, 9).code(), absl::StatusCode::kOutOfRange);

  ASSERT_TRUE(cache->Release(a).ok());
  ASSERT_TRUE(cache->Release(b).ok());
  EXPECT_EQ(cache->pool().used(), 0);
  EXPECT_EQ(cache->Release(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->length(a), -1);
}

TEST(PagedKvCacheTest, RejectsLengthsPastTheSequenceLimit) {
  auto cache = *PagedKvCache::Create(SmallLayout(), 100, 10);
  const SeqId a = cache->CreateSequence();
  const int n = 11;
  EXPECT_EQ(cache->Reserve(&a, &n, 1).code(), absl::StatusCode::kOutOfRange);
  const SeqId unknown = 999;
  const int one = 1;
  EXPECT_EQ(cache->Reserve(&unknown, &one, 1).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace arbor::kvcache
