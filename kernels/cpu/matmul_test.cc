#include "arbor/kernels/matmul.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "arbor/kernels/parallel.h"
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

std::vector<uint16_t> To16(const std::vector<float>& w, DType dtype) {
  std::vector<uint16_t> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    if (dtype == DType::kBF16) {
      out[i] = F32ToBF16(w[i]);
    } else {
      const _Float16 h = static_cast<_Float16>(w[i]);
      std::memcpy(&out[i], &h, sizeof(h));
    }
  }
  return out;
}

// 16-bit weights: the direct kernel (up to kDirectRows rows, every remainder of its groups of
// four) and the converted-tile SGEMM path, both betas, lengths with and without a tail, against
// a float64 loop over the same (exactly converted) weights. beta 0 must not read y (NaN there).
TEST(MatMulWTTest, SixteenBitWeightsMatchAFloat64LoopForEveryPath) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 1);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    // k 3500: a matrix over kSmallMatrixElements, so 33 and 64 rows take the direct kernel
    // (the small ones take SGEMM from kSmallMatrixRows rows on).
    for (int k : {53, 64, 300, 3500}) {
      const int n = 77;
      std::vector<float> w(n * k);
      for (float& v : w) v = nd(rng);
      const std::vector<uint16_t> w16 = To16(w, dtype);
      std::vector<float> exact(w.size());
      ConvertToF32(dtype, w16.data(), w16.size(), exact.data());
      for (int m : {1, 2, 3, 4, 5, 7, 8, 9, 17, 33, 40, kDirectRows, kDirectRows + 1, 90}) {
        if (k == 3500 && m != 33 && m != kDirectRows) continue;
        if (k == 3500) {
          EXPECT_TRUE(UsesDirectKernel(m, n, k));
        }
        if (k == 300 && m >= kSmallMatrixRows && m <= kDirectRows) {
          EXPECT_FALSE(UsesDirectKernel(m, n, k));
        }
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> x(m * k), y(m * n), want(m * n);
          for (float& v : x) v = nd(rng);
          for (int i = 0; i < m * n; ++i) {
            want[i] = nd(rng);
            y[i] = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : want[i];
          }
          for (int i = 0; i < m; ++i) {
            for (int j = 0; j < n; ++j) {
              double acc = 0;
              for (int l = 0; l < k; ++l) {
                acc += static_cast<double>(x[i * k + l]) * exact[j * k + l];
              }
              want[i * n + j] = static_cast<float>(acc + beta * want[i * n + j]);
            }
          }
          // Without and with the f32 copy a small matrix carries (model::Matrix).
          for (const float* copy :
               {static_cast<const float*>(nullptr), static_cast<const float*>(exact.data())}) {
            std::vector<float> out = y;
            MatMulWT(x.data(), {w16.data(), dtype, copy}, out.data(), m, n, k, beta);
            for (int i = 0; i < m * n; ++i) {
              ASSERT_NEAR(out[i], want[i], 1e-4f * (1 + std::abs(want[i])))
                  << DTypeName(dtype) << " k " << k << " m " << m << " beta " << beta << " at " << i
                  << (copy ? " with the f32 copy" : "");
            }
          }
        }
      }
    }
  }
}

TEST(MatMulWTTest, RowRangeWritesOnlyItsRowsAndConversionIsExact) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  const int m = 3, n = 40, k = 35;
  std::vector<float> w(n * k), x(m * k);
  for (float& v : w) v = nd(rng);
  for (float& v : x) v = nd(rng);
  const std::vector<uint16_t> w16 = To16(w, DType::kBF16);
  std::vector<float> y(m * n, -7.0f);
  MatMulWT16Rows(x.data(), w16.data(), DType::kBF16, y.data(), m, n, k, 0.0f, 10, 20);
  for (int r = 0; r < m; ++r) {
    for (int j = 0; j < n; ++j) {
      const bool in_range = j >= 10 && j < 20;
      EXPECT_EQ(y[r * n + j] == -7.0f, !in_range) << r << "," << j;
    }
  }
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    const std::vector<uint16_t> h = To16(w, dtype);
    std::vector<float> got(5 * k), want(5 * k);
    ConvertRowsToF32(h.data(), dtype, k, 7, 5, got.data());
    ConvertToF32(dtype, h.data() + 7 * k, 5 * k, want.data());
    EXPECT_EQ(got, want) << DTypeName(dtype);
  }
}

// Every index exactly once, from two threads at a time (the second runs inline while the first
// holds the workers), for sizes below and above the grain.
TEST(ParallelForTest, EveryIndexOnceEvenFromTwoThreadsAtATime) {
  auto run = [](int seed) {
    for (int n : {1, 5, 16, 17, 100, 1000 + seed}) {
      std::vector<std::atomic<int>> hits(n);
      for (int rep = 0; rep < 50; ++rep) {
        ParallelFor(n, 4, [&](int begin, int end) {
          ASSERT_LE(0, begin);
          ASSERT_LE(begin, end);
          ASSERT_LE(end, n);
          for (int i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
      }
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 50) << "n " << n << " at " << i;
    }
  };
  std::thread other([&] { run(1); });
  run(2);
  other.join();
  EXPECT_GE(ParallelThreads(), 1);
}

}  // namespace
}  // namespace arbor::kernels
