#include "arbor/kernels/matmul.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

// Every row count (the one-row SGEMV path and the SGEMM path) and both betas against a float64
// loop over the same inputs.
TEST(MatMulWTCpuTest, MatchesAPlainLoopForOneRowAndMany) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);
  const int n = 37, k = 53;
  std::vector<float> w(n * k);
  for (float& v : w) v = nd(rng);
  for (int m : {1, 2, 5}) {
    for (float beta : {0.0f, 1.0f}) {
      std::vector<float> x(m * k), y(m * n), want(m * n);
      for (float& v : x) v = nd(rng);
      for (int i = 0; i < m * n; ++i) want[i] = y[i] = nd(rng);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double acc = 0;
          for (int l = 0; l < k; ++l) acc += static_cast<double>(x[i * k + l]) * w[j * k + l];
          want[i * n + j] = static_cast<float>(acc + beta * want[i * n + j]);
        }
      }
      MatMulWTCpu(x.data(), w.data(), y.data(), m, n, k, beta);
      for (int i = 0; i < m * n; ++i) {
        ASSERT_NEAR(y[i], want[i], 1e-4f * (1 + std::abs(want[i])))
            << "m " << m << " beta " << beta << " at " << i;
      }
    }
  }
}

}  // namespace
}  // namespace arbor::kernels
