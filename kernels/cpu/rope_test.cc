#include "arbor/kernels/rope.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

TEST(RopeTest, RotatesHalvesAsHuggingFaceDoes) {
  const int hd = 8, heads = 2, stride = 20;
  RopeTable table(hd, 10000.0f, 64);
  std::vector<float> x(3 * stride);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.3 * i);
  const std::vector<float> orig = x;
  const int pos[3] = {0, 5, 63};
  RopeParams p{x.data(), pos, &table, 3, heads, stride};
  ASSERT_TRUE(p.Validate().ok());
  RopeCpu(p);
  for (int t = 0; t < 3; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd; ++i) {
        // q*cos + rotate_half(q)*sin with cos/sin = cat(freqs, freqs)
        const int k = i % (hd / 2);
        const double angle = pos[t] * std::pow(10000.0, -2.0 * k / hd);
        const float* o = orig.data() + t * stride + h * hd;
        const double rot = i < hd / 2 ? -o[i + hd / 2] : o[i - hd / 2];
        EXPECT_NEAR(x[t * stride + h * hd + i], o[i] * std::cos(angle) + rot * std::sin(angle),
                    1e-5);
      }
    }
    // Columns past the heads are untouched.
    for (int i = heads * hd; i < stride; ++i) EXPECT_EQ(x[t * stride + i], orig[t * stride + i]);
  }
}

TEST(RopeTest, RejectsPositionsPastTheTable) {
  RopeTable table(4, 10000.0f, 8);
  float x[4];
  const int pos = 8;
  RopeParams p{x, &pos, &table, 1, 1, 4};
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace arbor::kernels
