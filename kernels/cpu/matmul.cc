#include "arbor/kernels/matmul.h"

#if ARBOR_X86_KERNELS
#include <cpuid.h>
#endif
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "arbor/kernels/parallel.h"
#include "attend_block.h"
#include "matmul_avx2.h"

namespace arbor::kernels {
namespace {

#if ARBOR_X86_KERNELS
// F16C from CPUID (clang's __builtin_cpu_supports does not know "f16c").
bool HaveF16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}

bool HaveAvx2() {
  static const bool have =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HaveF16c();
  return have;
}
#endif

float ToF32(uint16_t v, DType dtype) { return dtype == DType::kBF16 ? BF16ToF32(v) : F16ToF32(v); }

void RowsScalar(const float* x, const uint16_t* w, DType dtype, float* y, int m, int n, int k,
                float beta, int n_begin, int n_end) {
  std::vector<float> row(k);
  for (int j = n_begin; j < n_end; ++j) {
    for (int l = 0; l < k; ++l) row[l] = ToF32(w[static_cast<size_t>(j) * k + l], dtype);
    for (int r = 0; r < m; ++r) {
      float acc = 0;
      for (int l = 0; l < k; ++l) acc += x[static_cast<size_t>(r) * k + l] * row[l];
      float& out = y[static_cast<size_t>(r) * n + j];
      out = beta == 0.0f ? acc : acc + beta * out;
    }
  }
}

// The packed kernel's plain form, for CPUs without AVX2/FMA.
void PackedScalar(const float* x, const float* packed, float* y, int m, int n, int k, float beta,
                  int p_begin, int p_end) {
  for (int p = p_begin; p < p_end; ++p) {
    const float* panel = packed + static_cast<size_t>(p) * k * kPanelRows;
    const int cols = std::min(kPanelRows, n - p * kPanelRows);
    for (int r = 0; r < m; ++r) {
      float acc[kPanelRows] = {};
      for (int l = 0; l < k; ++l) {
        const float a = x[static_cast<size_t>(r) * k + l];
        for (int j = 0; j < kPanelRows; ++j) acc[j] += a * panel[l * kPanelRows + j];
      }
      float* o = y + static_cast<size_t>(r) * n + p * kPanelRows;
      for (int j = 0; j < cols; ++j) o[j] = beta == 0.0f ? acc[j] : acc[j] + beta * o[j];
    }
  }
}

// ParallelFor's grain for a loop whose items cost `macs_per_item` multiply-adds each: pieces of
// at least ~64K multiply-adds, enough work to pay for handing them to a thread (a small model's
// products run inline).
int GrainFor(int64_t macs_per_item) {
  return static_cast<int>(
      std::max<int64_t>(1, (int64_t{64} << 10) / std::max<int64_t>(1, macs_per_item)));
}

// Rows of w per converted tile, a multiple of 16: about 256 KiB of f32 (it stays in L2 while
// SGEMM reads it) for a few rows of x, up to 8 MiB for many, where SGEMM needs wide products
// to run at its rate and the conversion is a small part of the work.
int TileRows(int m, int k) {
  const int bytes = m >= 32 ? 8 << 20 : 256 << 10;
  return std::max(16, (bytes / (4 * k)) / 16 * 16);
}

}  // namespace

void MatMulWTCpu(const float* x, const float* w, float* y, int m, int n, int k, float beta) {
  if (m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, beta, y, n);
}

void MatMulWT16Rows(const float* x, const uint16_t* w, DType dtype, float* y, int m, int n, int k,
                    float beta, int n_begin, int n_end) {
#if ARBOR_X86_KERNELS
  if (HaveAvx2()) {
    internal::MatMulWT16RowsAvx2(x, w, dtype == DType::kBF16, y, m, n, k, beta, n_begin, n_end);
    return;
  }
#endif
  RowsScalar(x, w, dtype, y, m, n, k, beta, n_begin, n_end);
}

void ConvertRowsToF32(const uint16_t* w, DType dtype, int k, int row, int rows, float* out) {
  const uint16_t* src = w + static_cast<size_t>(row) * k;
  const size_t count = static_cast<size_t>(rows) * k;
#if ARBOR_X86_KERNELS
  if (HaveAvx2()) {
    internal::ConvertToF32Avx2(src, dtype == DType::kBF16, count, out);
    return;
  }
#endif
  ConvertToF32(dtype, src, count, out);
}

namespace internal {

void BlockScores(const float* q, int m, int hd, const float* k, int valid, float* s, int ld) {
#if ARBOR_X86_KERNELS
  if (HaveAvx2()) {
    BlockScoresAvx2(q, m, hd, k, valid, s, ld);
    return;
  }
#endif
  for (int row = 0; row < m; ++row) {
    for (int t = 0; t < valid; ++t) {
      float acc = 0;
      for (int d = 0; d < hd; ++d) acc += q[row * hd + d] * k[t * hd + d];
      s[static_cast<size_t>(row) * ld + t] = acc;
    }
  }
}

void BlockAccumulate(const float* s, int m, int valid, int ld, const float* v, int hd, float* o) {
#if ARBOR_X86_KERNELS
  if (HaveAvx2()) {
    BlockAccumulateAvx2(s, m, valid, ld, v, hd, o);
    return;
  }
#endif
  for (int row = 0; row < m; ++row) {
    for (int t = 0; t < valid; ++t) {
      const float w = s[static_cast<size_t>(row) * ld + t];
      for (int d = 0; d < hd; ++d) o[row * hd + d] += w * v[t * hd + d];
    }
  }
}

}  // namespace internal

void PackWeights(WeightView w, int n, int k, float* out) {
  std::vector<float> converted(w.dtype == DType::kF32 ? 0 : k);  // one 16-bit row in f32
  std::fill(out, out + PackedFloats(n, k), 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* row = static_cast<const float*>(w.data) + static_cast<size_t>(j) * k;
    if (w.dtype != DType::kF32) {
      ConvertRowsToF32(static_cast<const uint16_t*>(w.data), w.dtype, k, j, 1, converted.data());
      row = converted.data();
    }
    float* panel = out + static_cast<size_t>(j / kPanelRows) * k * kPanelRows;
    for (int l = 0; l < k; ++l) {
      panel[static_cast<size_t>(l) * kPanelRows + j % kPanelRows] = row[l];
    }
  }
}

void MatMulWTPacked(const float* x, const float* packed, float* y, int m, int n, int k,
                    float beta) {
  const int panels = (n + kPanelRows - 1) / kPanelRows;
  ParallelFor(panels, GrainFor(int64_t{m} * k * kPanelRows), [&](int begin, int end) {
#if ARBOR_X86_KERNELS
    if (HaveAvx2()) {
      internal::MatMulPackedAvx2(x, packed, y, m, n, k, beta, begin, end);
      return;
    }
#endif
    PackedScalar(x, packed, y, m, n, k, beta, begin, end);
  });
}

void MatMulWT(const float* x, WeightView w, float* y, int m, int n, int k, float beta) {
  if (w.packed != nullptr && UsesPackedKernel(m)) {
    MatMulWTPacked(x, w.packed, y, m, n, k, beta);
    return;
  }
  if (w.dtype == DType::kF32) {
    MatMulWTCpu(x, static_cast<const float*>(w.data), y, m, n, k, beta);
    return;
  }
  const auto* w16 = static_cast<const uint16_t*>(w.data);
  if (UsesDirectKernel(m, w.packed != nullptr)) {
    ParallelFor(n, GrainFor(int64_t{m} * k), [&](int begin, int end) {
      MatMulWT16Rows(x, w16, w.dtype, y, m, n, k, beta, begin, end);
    });
    return;
  }
  if (w.f32 != nullptr) {
    MatMulWTCpu(x, w.f32, y, m, n, k, beta);
    return;
  }
  const int tile = std::min(n, TileRows(m, k));
  thread_local std::vector<float> f32;
  f32.resize(static_cast<size_t>(tile) * k);
  for (int j = 0; j < n; j += tile) {
    const int rows = std::min(tile, n - j);
    ConvertRowsToF32(w16, w.dtype, k, j, rows, f32.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rows, k, 1.0f, x, k, f32.data(), k,
                beta, y + j, n);
  }
}

}  // namespace arbor::kernels
