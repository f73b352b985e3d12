#include "arbor/engine/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::engine {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 0.5f, 2.5f, -1.0f, 2.9f};

std::vector<double> Softmax(const std::vector<float>& l, double t) {
  std::vector<double> p(l.size());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += p[i] = std::exp(l[i] / t);
  for (double& x : p) x /= z;
  return p;
}

std::vector<double> Frequencies(const SamplingParams& params, int draws) {
  Sampler s(static_cast<int>(kLogits.size()));
  std::mt19937_64 rng(params.seed);
  std::vector<double> f(kLogits.size());
  for (int i = 0; i < draws; ++i) f[s.Sample(kLogits.data(), params, rng).id] += 1.0 / draws;
  return f;
}

TEST(SamplerTest, GreedyPicksArgmaxWithItsLogSoftmax) {
  Sampler s(6);
  std::mt19937_64 rng(0);
  const SampledToken t = s.Sample(kLogits.data(), {}, rng);
  EXPECT_EQ(t.id, 1);
  EXPECT_NEAR(t.logprob, std::log(Softmax(kLogits, 1.0)[1]), 1e-6);
}

TEST(SamplerTest, TemperatureSamplesFollowTheScaledSoftmax) {
  for (float temp : {1.0f, 0.5f}) {
    const auto f = Frequencies({temp, 0, 1.0f, 7}, 40000);
    const auto p = Softmax(kLogits, temp);
    for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(f[i], p[i], 0.01) << temp << " " << i;
  }
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  const auto f = Frequencies({1.0f, 2, 1.0f, 3}, 20000);
  EXPECT_GT(f[1], 0.4);
  EXPECT_GT(f[5], 0.4);
  EXPECT_EQ(f[0] + f[2] + f[3] + f[4], 0.0);
  // Renormalised over the two kept: e^3 / (e^3 + e^2.9).
  EXPECT_NEAR(f[1], 1 / (1 + std::exp(-0.1)), 0.015);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // Probabilities sorted: 1 (0.35), 5 (0.32), 3 (0.21), ... ; top_p 0.6 keeps {1, 5}.
  const auto f = Frequencies({1.0f, 0, 0.6f, 11}, 20000);
  EXPECT_EQ(f[0] + f[2] + f[3] + f[4], 0.0);
  const auto tiny = Frequencies({1.0f, 0, 1e-6f, 3}, 1000);
  EXPECT_NEAR(tiny[1], 1.0, 1e-9);  // only the most likely token survives
}

TEST(SamplerTest, SameSeedSameTokensAndLogprobsAreTheModelsOwn) {
  Sampler s(6);
  std::mt19937_64 a(42), b(42), c(43);
  const SamplingParams p{1.0f, 0, 1.0f, 42};
  std::vector<int> ra, rb, rc;
  for (int i = 0; i < 50; ++i) {
    const SampledToken t = s.Sample(kLogits.data(), p, a);
    EXPECT_NEAR(t.logprob, std::log(Softmax(kLogits, 1.0)[t.id]), 1e-6);
    ra.push_back(t.id);
    rb.push_back(s.Sample(kLogits.data(), p, b).id);
    rc.push_back(s.Sample(kLogits.data(), p, c).id);
  }
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
}

TEST(SamplerTest, TopLogprobsAreTheMostLikelyInOrderWithTheirLogSoftmax) {
  Sampler s(6);
  std::vector<int> ids = {99};  // appended to, not replaced
  std::vector<float> lp = {0.5f};
  std::mt19937_64 rng(1);
  const SampledToken greedy = s.Sample(kLogits.data(), {}, rng);
  s.TopLogprobs(kLogits.data(), 3, greedy.log_normalizer, &ids, &lp);
  EXPECT_EQ(ids, (std::vector<int>{99, 1, 5, 3}));
  const auto p = Softmax(kLogits, 1.0);
  ASSERT_EQ(lp.size(), 4u);
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_NEAR(lp[i], std::log(p[ids[i]]), 1e-6);
  // k is clamped to the vocabulary; ties go to the lower id.
  const std::vector<float> tied = {2.0f, 1.0f, 2.0f};
  Sampler t(3);
  ids.clear();
  lp.clear();
  t.TopLogprobs(tied.data(), 10, t.Sample(tied.data(), {}, rng).log_normalizer, &ids, &lp);
  EXPECT_EQ(ids, (std::vector<int>{0, 2, 1}));
  EXPECT_FLOAT_EQ(lp[0], lp[1]);
}

TEST(SamplerTest, ValidateNamesTheField) {
  EXPECT_NE(SamplingParams{-1.0f}.Validate().message().find("temperature"),
            absl::string_view::npos);
  EXPECT_NE((SamplingParams{1.0f, -2}).Validate().message().find("top_k"), absl::string_view::npos);
  EXPECT_NE((SamplingParams{1.0f, 0, 0.0f}).Validate().message().find("top_p"),
            absl::string_view::npos);
  EXPECT_NE((SamplingParams{1.0f, 0, 1.5f}).Validate().message().find("top_p"),
            absl::string_view::npos);
  EXPECT_TRUE((SamplingParams{0.7f, 40, 0.9f}).Validate().ok());
}

}  // namespace
}  // namespace arbor::engine
