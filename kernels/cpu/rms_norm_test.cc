#include "arbor/kernels/rms_norm.h"

#include <cmath>
#include <vector>

#include "arbor/kernels/swiglu.h"
#include "fast_exp.h"
#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

TEST(RmsNormTest, MatchesTheFormulaRowByRowWithStride) {
  const int rows = 3, dim = 5, stride = 7;
  std::vector<float> x(rows * stride), w(dim), out(rows * dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7 * i) * 3;
  for (int i = 0; i < dim; ++i) w[i] = 0.5f + 0.1f * i;
  RmsNormParams p{x.data(), w.data(), out.data(), rows, dim, stride, 1e-5f};
  ASSERT_TRUE(p.Validate().ok());
  RmsNormCpu(p);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += x[r * stride + i] * x[r * stride + i];
    const double inv = 1 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) {
      EXPECT_NEAR(out[r * dim + i], x[r * stride + i] * inv * w[i], 1e-6);
    }
  }
}

TEST(RmsNormTest, RejectsStrideShorterThanRow) {
  float x[4], w[4], out[4];
  RmsNormParams p{x, w, out, 1, 4, 3, 1e-5f};
  EXPECT_FALSE(p.Validate().ok());
}

TEST(SwiGluTest, IsSiluOfFirstHalfTimesSecondHalf) {
  std::vector<float> in = {-2, 0, 1.5, 3, 0.5, -1};  // one row, dim 3
  std::vector<float> out(3);
  SwiGluParams p{in.data(), out.data(), 1, 3};
  ASSERT_TRUE(p.Validate().ok());
  SwiGluCpu(p);
  for (int i = 0; i < 3; ++i) {
    const double a = in[i], b = in[3 + i];
    EXPECT_NEAR(out[i], a / (1 + std::exp(-a)) * b, 1e-6);
  }
}

}  // namespace
}  // namespace arbor::kernels

namespace arbor::kernels {
namespace {

TEST(FastExpTest, RelativeErrorBelow3e7OverTheSoftmaxRange) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(internal::FastExp(x) - want) / want);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_LT(internal::FastExp(-1000.0f), 1e-37f);
  EXPECT_EQ(internal::FastExp(0.0f), 1.0f);
}

}  // namespace
}  // namespace arbor::kernels
