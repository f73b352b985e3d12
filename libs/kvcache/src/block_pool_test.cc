#include "arbor/kvcache/block_pool.h"

#include "gtest/gtest.h"

namespace arbor::kvcache {
namespace {

TEST(KvLayoutTest, OffsetsFollowLayerKvHeadTokenDim) {
  const KvLayout l{2, 2, 4, 4};
  EXPECT_EQ(l.head_stride(), 16u);
  EXPECT_EQ(l.floats_per_block(), 2u * 2 * 2 * 16);
  EXPECT_EQ(l.offset(0, 1), 32u);  // V of layer 0 after K's two heads
  EXPECT_EQ(l.offset(1, 0), 64u);
  EXPECT_EQ(l.BlocksFor(0), 0);
  EXPECT_EQ(l.BlocksFor(4), 1);
  EXPECT_EQ(l.BlocksFor(5), 2);
}

TEST(BlockPoolTest, AllocatesUpToCapacityThenResourceExhausted) {
  auto pool = *BlockPool::Create(KvLayout{1, 1, 4, 4}, 2);
  const int a = *pool->Allocate(), b = *pool->Allocate();
  EXPECT_NE(a, b);
  EXPECT_EQ(pool->used(), 2);
  EXPECT_EQ(pool->Allocate().status().code(), absl::StatusCode::kResourceExhausted);
  pool->Free(a);
  EXPECT_EQ(pool->used(), 1);
  EXPECT_EQ(*pool->Allocate(), a);
  EXPECT_FALSE(BlockPool::Create(KvLayout{1, 1, 4, 4}, 0).ok());
  EXPECT_FALSE(BlockPool::Create(KvLayout{0, 1, 4, 4}, 4).ok());
}

}  // namespace
}  // namespace arbor::kvcache
