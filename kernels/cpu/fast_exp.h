// A vectorisable exp for the attention kernels' softmax (internal to kernels/cpu). Cephes-style:
// exp(x) = 2^n * e^r with n = round(x / ln 2) and a degree-6 polynomial for e^r; relative
// error below 3e-7 on [-87, 88] (tested against std::exp). Inputs below -87 give ~0; written
// with plain loops, casts and selects so GCC vectorises it with SSE2.
#pragma once

#include <cstdint>
#include <cstring>

namespace arbor::kernels::internal {

inline float FastExp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float fx = x * 1.44269504088896341f + 0.5f;  // x / ln 2, rounded below via truncation
  float t = static_cast<float>(static_cast<int32_t>(fx));
  fx = t > fx ? t - 1.0f : t;  // floor
  x -= fx * 0.693359375f;
  x -= fx * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * x * x + x + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float pow2n;
  std::memcpy(&pow2n, &bits, sizeof(pow2n));
  return y * pow2n;
}

// x[i] = exp(x[i] - shift); returns the sum. Two loops: the first vectorises, the float sum
// (which would need reassociation) stays in order in the second.
inline float ExpShiftSum(float* __restrict x, int n, float shift) {
  for (int i = 0; i < n; ++i) x[i] = FastExp(x[i] - shift);
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += x[i];
  return sum;
}

}  // namespace arbor::kernels::internal
