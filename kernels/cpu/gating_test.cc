#include "arbor/kernels/gating.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

TEST(GatingTest, SoftmaxTopKRenormalised) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.0f};
  int ids[2];
  float w[2];
  GatingParams p{logits.data(), ids, w, 1, 4, 2};
  ASSERT_TRUE(p.Validate().ok());
  GatingCpu(p);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  // Renormalised top-2 of a softmax = softmax over the two kept logits.
  EXPECT_NEAR(w[0], 1 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(w[0] + w[1], 1.0f, 1e-6);
}

TEST(GatingTest, TopOneHasWeightOneAndTiesGoToLowerIndex) {
  const std::vector<float> logits = {0.5f, 2.0f, 2.0f};
  int id;
  float w;
  GatingParams p{logits.data(), &id, &w, 1, 3, 1};
  GatingCpu(p);
  EXPECT_EQ(id, 1);
  EXPECT_FLOAT_EQ(w, 1.0f);
}

TEST(GatingTest, RejectsTopKAboveExpertCount) {
  float l[2];
  int id[3];
  float w[3];
  EXPECT_FALSE((GatingParams{l, id, w, 1, 2, 3}).Validate().ok());
}

}  // namespace
}  // namespace arbor::kernels
