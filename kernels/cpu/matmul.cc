#include "arbor/kernels/matmul.h"

#if ARBOR_X86_KERNELS
#include <cpuid.h>
#endif
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "arbor/kernels/parallel.h"
#include "matmul_16bit.h"

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

void MatMulWT(const float* x, WeightView w, float* y, int m, int n, int k, float beta) {
  if (w.dtype == DType::kF32) {
    MatMulWTCpu(x, static_cast<const float*>(w.data), y, m, n, k, beta);
    return;
  }
  const auto* w16 = static_cast<const uint16_t*>(w.data);
  const bool direct = UsesDirectKernel(m, n, k);
  if (!direct && w.f32 != nullptr) {
    MatMulWTCpu(x, w.f32, y, m, n, k, beta);
    return;
  }
  if (direct) {
    // Pieces of at least ~64K multiply-adds: enough work to pay for handing them to a thread
    // (a small model's products run inline).
    const int grain = std::max(1, (64 << 10) / std::max(1, m * k));
    ParallelFor(n, grain, [&](int begin, int end) {
      MatMulWT16Rows(x, w16, w.dtype, y, m, n, k, beta, begin, end);
    });
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
