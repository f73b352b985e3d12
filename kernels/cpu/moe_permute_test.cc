#include "arbor/kernels/moe_permute.h"

#include <random>
#include <vector>

#include "arbor/common/dtype.h"
#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

struct Permuted {
  std::vector<int> counts, offsets, row_token, slot_row;
};

Permuted Permute(const std::vector<int>& ids, int n_tokens, int top_k, int n_experts, int align) {
  Permuted r;
  MoePermuteParams p;
  p.expert_ids = ids.data(), p.n_tokens = n_tokens, p.top_k = top_k, p.n_experts = n_experts;
  p.row_align = align;
  r.counts.resize(n_experts), r.offsets.resize(n_experts + 1);
  r.row_token.assign(p.MaxRows(), -7), r.slot_row.assign(ids.size(), -7);
  p.expert_counts = r.counts.data(), p.expert_offsets = r.offsets.data();
  p.row_token = r.row_token.data(), p.slot_row = r.slot_row.data();
  EXPECT_TRUE(p.Validate().ok());
  MoePermuteCpu(p);
  return r;
}

TEST(MoePermuteTest, GroupsRowsByExpertStablyWithAlignedGroups) {
  // 5 tokens, top-2, 4 experts; expert 3 gets nothing.
  const std::vector<int> ids = {1, 0, 2, 1, 0, 1, 1, 2, 0, 2};
  const Permuted r = Permute(ids, 5, 2, 4, 4);
  EXPECT_EQ(r.counts, (std::vector<int>{3, 4, 3, 0}));
  EXPECT_EQ(r.offsets, (std::vector<int>{0, 4, 8, 12, 12}));
  // Expert 0: tokens 0, 2, 4 then a pad row; expert 1: 0, 1, 2, 3; expert 2: 1, 3, 4 + pad.
  EXPECT_EQ(std::vector<int>(r.row_token.begin(), r.row_token.begin() + 12),
            (std::vector<int>{0, 2, 4, -1, 0, 1, 2, 3, 1, 3, 4, -1}));
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(r.row_token[r.slot_row[i]], static_cast<int>(i) / 2) << "slot " << i;
    EXPECT_GE(r.slot_row[i], r.offsets[ids[i]]);
    EXPECT_LT(r.slot_row[i], r.offsets[ids[i]] + r.counts[ids[i]]);
  }
}

TEST(MoePermuteTest, GatherThenUnpermuteEqualsTheDenseWeightedSum) {
  // With y = the gathered rows themselves (an identity expert), unpermute must give
  // out[t] = base[t] + sum_j w[t, j] * bf16(x[t]).
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  const int n = 37, k = 2, e = 8, dim = 24;
  std::vector<int> ids(n * k);
  std::vector<float> w(n * k), x(n * dim), out(n * dim), want(n * dim);
  for (int t = 0; t < n; ++t) {
    ids[t * k] = static_cast<int>(rng() % e);
    ids[t * k + 1] = (ids[t * k] + 1 + static_cast<int>(rng() % (e - 1))) % e;
    w[t * k] = 0.7f, w[t * k + 1] = 0.3f;
  }
  for (float& v : x) v = nd(rng);
  for (float& v : out) v = nd(rng);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < dim; ++i) {
      want[t * dim + i] = out[t * dim + i] + BF16ToF32(F32ToBF16(x[t * dim + i]));
    }
  }
  const Permuted r = Permute(ids, n, k, e, 8);
  const int rows = r.offsets[e];
  std::vector<bf16_t> y(static_cast<size_t>(rows) * dim, 0xffff);
  GatherRowsParams g{x.data(), n, r.row_token.data(), y.data(), rows, dim};
  ASSERT_TRUE(g.Validate().ok());
  GatherRowsCpu(g);
  MoeUnpermuteParams u;
  u.y = y.data(), u.n_rows = rows, u.rows_per_token = k, u.rows = r.slot_row.data();
  u.weights = w.data(), u.out = out.data(), u.n_tokens = n, u.dim = dim;
  ASSERT_TRUE(u.Validate().ok());
  MoeUnpermuteCpu(u);
  for (int i = 0; i < n * dim; ++i) ASSERT_NEAR(out[i], want[i], 1e-5) << i;
  // Pad rows were gathered as zeros.
  for (int row = 0; row < rows; ++row) {
    if (r.row_token[row] < 0) {
      EXPECT_EQ(y[static_cast<size_t>(row) * dim], 0);
    }
  }
}

TEST(MoePermuteTest, OutOfRangeIdsAreDroppedAndBadShapesRejected) {
  const Permuted r = Permute({0, 9, 1, 0}, 2, 2, 2, 1);
  EXPECT_EQ(r.counts, (std::vector<int>{2, 1}));
  EXPECT_EQ(r.slot_row[1], -1);
  MoePermuteParams p;
  EXPECT_FALSE(p.Validate().ok());
  MoeUnpermuteParams u;
  EXPECT_FALSE(u.Validate().ok());
}

}  // namespace
}  // namespace arbor::kernels
