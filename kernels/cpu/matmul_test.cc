#include "arbor/kernels/matmul.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "arbor/kernels/parallel.h"
#include "attend_block.h"
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

// Every path of MatMulWT: f32 and 16-bit weights, each without and with the packed copy a small
// matrix carries (model::Matrix); the direct 16-bit kernel (up to kDirectRows rows, every
// remainder of its groups of four), the converted-tile SGEMM path, the packed kernel (every
// remainder of its groups of six rows, a last panel of 13 columns of 16); both betas, lengths
// with and without a tail; against a float64 loop over the same (exactly converted) weights.
// beta 0 must not read y (NaN there).
TEST(MatMulWTTest, EveryPathMatchesAFloat64Loop) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 1);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    // k 3500: a matrix over kSmallMatrixElements, so 33 and 64 rows take the direct kernel.
    for (int k : {53, 64, 300, 3500}) {
      const int n = 77;
      std::vector<float> w(n * k);
      for (float& v : w) v = nd(rng);
      const std::vector<uint16_t> w16 =
          dtype == DType::kF32 ? std::vector<uint16_t>{} : To16(w, dtype);
      std::vector<float> exact = w;
      if (dtype != DType::kF32) ConvertToF32(dtype, w16.data(), w16.size(), exact.data());
      const WeightView plain{dtype == DType::kF32 ? static_cast<const void*>(w.data())
                                                  : static_cast<const void*>(w16.data()),
                             dtype};
      std::vector<float> packed(PackedFloats(n, k), std::numeric_limits<float>::quiet_NaN());
      PackWeights(plain, n, k, packed.data());
      for (int m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 17, 33, 40, kDirectRows, kDirectRows + 1, 90,
                    kPackedMaxRows + 1}) {
        if (k == 3500 && m != 33 && m != kDirectRows) continue;
        if (dtype != DType::kF32) {
          EXPECT_EQ(UsesDirectKernel(m, false), m <= kDirectRows);
          EXPECT_EQ(UsesDirectKernel(m, true), m <= kDirectRows && !UsesPackedKernel(m));
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
          // Without copies, with the packed copy, and with both (a small 16-bit matrix).
          for (int copies : {0, 1, 2}) {
            if (copies > 0 && k == 3500) continue;  // never packed: not small
            if (copies == 2 && dtype == DType::kF32) continue;
            std::vector<float> out = y;
            WeightView view = plain;
            view.packed = copies > 0 ? packed.data() : nullptr;
            view.f32 = copies == 2 ? exact.data() : nullptr;
            MatMulWT(x.data(), view, out.data(), m, n, k, beta);
            for (int i = 0; i < m * n; ++i) {
              ASSERT_NEAR(out[i], want[i], 1e-4f * (1 + std::abs(want[i])))
                  << DTypeName(dtype) << " k " << k << " m " << m << " beta " << beta << " at " << i
                  << " copies " << copies;
            }
          }
        }
      }
    }
  }
}

// The packed layout: w[j][l] at [j / 16][l][j % 16], the last panel's padding zero.
TEST(MatMulWTTest, PackWeightsLaysOutPanelsOfSixteenRows) {
  const int n = 19, k = 5;
  std::vector<float> w(n * k);
  for (int i = 0; i < n * k; ++i) w[i] = static_cast<float>(i + 1);
  std::vector<float> packed(PackedFloats(n, k), -1.0f);
  ASSERT_EQ(packed.size(), static_cast<size_t>(2 * kPanelRows * k));
  PackWeights({w.data(), DType::kF32}, n, k, packed.data());
  for (int p = 0; p < 2; ++p) {
    for (int l = 0; l < k; ++l) {
      for (int j = 0; j < kPanelRows; ++j) {
        const int row = p * kPanelRows + j;
        EXPECT_EQ(packed[(p * k + l) * kPanelRows + j], row < n ? w[row * k + l] : 0.0f)
            << p << "," << l << "," << j;
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

// Attention's small block products (decode steps) against float64 loops: head sizes with and
// without a tail of eight, blocks with and without a full group of eight keys, a score stride
// wider than the block; the accumulation adds to what the output held.
TEST(BlockProductsTest, ScoresAndAccumulationMatchAFloat64Loop) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  for (int hd : {32, 36, 5}) {
    for (int valid : {16, 13, 3}) {
      for (int m : {1, 3, 7}) {
        const int ld = 17;
        std::vector<float> q(m * hd), k(valid * hd), v(valid * hd), o(m * hd);
        for (auto* vec : {&q, &k, &v, &o}) {
          for (float& x : *vec) x = nd(rng);
        }
        std::vector<float> s(m * ld, std::numeric_limits<float>::quiet_NaN());
        internal::BlockScores(q.data(), m, hd, k.data(), valid, s.data(), ld);
        std::vector<float> want_o = o;
        for (int r = 0; r < m; ++r) {
          for (int t = 0; t < valid; ++t) {
            double acc = 0;
            for (int d = 0; d < hd; ++d) acc += static_cast<double>(q[r * hd + d]) * k[t * hd + d];
            ASSERT_NEAR(s[r * ld + t], acc, 1e-4 * (1 + std::abs(acc)))
                << "hd " << hd << " valid " << valid << " m " << m << " at " << r << "," << t;
          }
          for (int d = 0; d < hd; ++d) {
            double acc = o[r * hd + d];
            for (int t = 0; t < valid; ++t)
              acc += static_cast<double>(s[r * ld + t]) * v[t * hd + d];
            want_o[r * hd + d] = static_cast<float>(acc);
          }
        }
        internal::BlockAccumulate(s.data(), m, valid, ld, v.data(), hd, o.data());
        for (int i = 0; i < m * hd; ++i) {
          ASSERT_NEAR(o[i], want_o[i], 1e-4f * (1 + std::abs(want_o[i])))
              << "hd " << hd << " valid " << valid << " m " << m << " at " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace arbor::kernels
