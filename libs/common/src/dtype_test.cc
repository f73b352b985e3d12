#include "arbor/common/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace arbor {
namespace {

TEST(DTypeTest, ParsesSafetensorsAndTorchNames) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("F16"), DType::kF16);
  EXPECT_EQ(*ParseDType("F32"), DType::kF32);
  EXPECT_EQ(*ParseTorchDType("bfloat16"), DType::kBF16);
  auto bad = ParseDType("I64");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("I64"), absl::string_view::npos);
  EXPECT_FALSE(ParseTorchDType("int8").ok());
}

TEST(DTypeTest, F16ConversionCoversNormalsSubnormalsAndSpecials) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x8000), -0.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(DTypeTest, BF16RoundTripsAndRoundsToNearestEven) {
  for (float v : {0.0f, 1.0f, -3.5f, std::ldexp(1.0f, -100), 12352.0f}) {
    EXPECT_EQ(BF16ToF32(F32ToBF16(v)), v) << v;
  }
  // 1 + 2^-8 is exactly halfway between two bf16 values; ties go to the even mantissa (1.0).
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DTypeTest, ConvertToF32HandlesUnalignedSources) {
  unsigned char buf[9] = {0};
  const uint16_t one = 0x3f80;  // bf16 1.0
  std::memcpy(buf + 1, &one, 2);
  std::memcpy(buf + 3, &one, 2);
  float out[2];
  ConvertToF32(DType::kBF16, buf + 1, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f);
}

}  // namespace
}  // namespace arbor
