#include "arbor/kernels/decode_attention.h"

#include <vector>

#include "decode_case.h"
#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

using testing::DecodeCase;
using testing::MakeDecodeCase;
using testing::WorstError;

// Runs DecodeAttentionCpu over the case's chunks (tree = true) or per-sequence chunks.
std::vector<float> RunCpu(const DecodeCase& c, bool tree, int max_queries, int split) {
  const AttentionChunks& ch = c.Chunks(tree);
  std::vector<const bf16_t*> bk, bv;
  for (int b : ch.block_ids()) {
    bk.push_back(c.blocks_k[b].data()), bv.push_back(c.blocks_v[b].data());
  }
  const DecodePlan plan = PlanDecode(ch.view(), c.n_tokens, max_queries, split);
  std::vector<float> out(c.q.size(), -1.0f), pm(plan.n_slots * c.n_heads), pl(pm.size()),
      po(pm.size() * c.head_dim);
  DecodeAttentionParams p = c.Shapes();
  p.q = c.q.data(), p.out = out.data(), p.q_pos = c.q_pos.data();
  p.chunks = ch.view();
  p.block_k = bk.data(), p.block_v = bv.data();
  p.items = plan.items.data(), p.n_items = static_cast<int>(plan.items.size());
  p.query_slot_start = plan.query_slot_start.data(), p.query_slots = plan.query_slots.data();
  p.n_slots = plan.n_slots, p.partial_m = pm.data(), p.partial_l = pl.data();
  p.partial_o = po.data();
  EXPECT_TRUE(p.Validate().ok()) << p.Validate();
  DecodeAttentionCpu(p);
  return out;
}

TEST(DecodePlanTest, CoversEveryChunkQueryPairOnceInSplits) {
  // Two chunks: 10 tokens with queries {0, 1, 2}, 3 tokens with query {2}.
  AttentionChunks chunks;
  chunks.Add(0, 10, std::vector<int>{0});
  for (int q : {0, 1, 2}) chunks.AddQuery(q);
  chunks.Add(10, 3, std::vector<int>{1});
  chunks.AddQuery(2);
  DecodePlan plan = PlanDecode(chunks.view(), 3, 2, 4);
  // Chunk 0: query tiles {0,1},{2} x token splits [0,4),[4,8),[8,10) = 6 items; chunk 1: 1.
  ASSERT_EQ(plan.items.size(), 7u);
  EXPECT_EQ(plan.n_slots, 3 * 2 + 3 * 1 + 1);
  EXPECT_EQ(plan.query_slot_start, (std::vector<int>{0, 3, 6, 10}));
  std::vector<int> seen(plan.n_slots, 0);
  for (int s : plan.query_slots) ++seen[s];
  for (int s = 0; s < plan.n_slots; ++s) EXPECT_EQ(seen[s], 1) << "slot " << s;
  EXPECT_EQ(plan.items.back().chunk, 1);
  EXPECT_EQ(plan.items.back().tok_end, 3);
}

TEST(DecodeAttentionCpuTest, EqualsTreeAttentionForGqaRatiosAndSplits) {
  uint32_t seed = 1;
  for (int ratio : {1, 4, 8}) {
    const DecodeCase c = MakeDecodeCase(seed++, 8, 8 / ratio, 32, 16, 70, 9, 40, true);
    for (int split : {16, 64, 1024}) {
      EXPECT_LE(WorstError(RunCpu(c, true, kTreeDecodeRows / ratio, split), c.expected, 2e-2), 1.0)
          << "ratio " << ratio << " split " << split;
      EXPECT_LE(WorstError(RunCpu(c, false, 1, split), c.expected, 2e-2), 1.0)
          << "per-sequence, ratio " << ratio << " split " << split;
    }
  }
}

TEST(DecodeAttentionCpuTest, SingleTokenAndSingleSequence) {
  const DecodeCase one = MakeDecodeCase(5, 4, 4, 16, 16, 1, 0, 1, false);
  ASSERT_EQ(one.n_tokens, 1);
  EXPECT_LE(WorstError(RunCpu(one, true, 16, 64), one.expected, 2e-2), 1.0);
  const DecodeCase seq = MakeDecodeCase(6, 8, 2, 64, 16, 333, 0, 1, false);
  EXPECT_LE(WorstError(RunCpu(seq, false, 1, 100), seq.expected, 2e-2), 1.0);
}

TEST(DecodeAttentionCpuTest, RejectsHeadDimsTheKernelsCannotTile) {
  DecodeAttentionParams p;
  float f = 0;
  int i = 0;
  const bf16_t* b = nullptr;
  DecodeItem item{};
  p.q = &f, p.out = &f, p.q_pos = &i, p.chunks.start = &i, p.chunks.block_start = &i;
  p.chunks.query_start = &i, p.chunks.queries = &i, p.block_k = &b, p.block_v = &b;
  p.items = &item, p.query_slot_start = &i, p.query_slots = &i, p.partial_m = &f;
  p.partial_l = &f, p.partial_o = &f;
  p.n_heads = 4, p.n_kv_heads = 2, p.head_dim = 24, p.q_row_stride = 96, p.block_tokens = 16;
  p.head_stride = 16 * 24;
  EXPECT_FALSE(p.Validate().ok());  // 24 is not a multiple of 16
  p.head_dim = 32, p.q_row_stride = 128, p.head_stride = 16 * 32;
  EXPECT_TRUE(p.Validate().ok()) << p.Validate();
  p.n_kv_heads = 3;
  EXPECT_FALSE(p.Validate().ok());  // 4 heads do not group into 3
  EXPECT_TRUE(CheckTreeDecodeShape(64, 1, kMaxDecodeHeadDim).ok());
  EXPECT_FALSE(CheckTreeDecodeShape(kTreeDecodeRows * 2, 1, 64).ok());  // too many per kv head
  EXPECT_FALSE(CheckTreeDecodeShape(8, 8, kMaxDecodeHeadDim + 16).ok());
}

}  // namespace
}  // namespace arbor::kernels
