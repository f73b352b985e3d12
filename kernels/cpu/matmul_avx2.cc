// Built with -mavx2 -mfma -mf16c (kernels/CMakeLists.txt); reached only through matmul.cc's
// CPU check.
#include <immintrin.h>

#include "arbor/common/dtype.h"
#include "matmul_16bit.h"

namespace arbor::kernels::internal {
namespace {

template <bool kBf16>
inline __m256 Load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBf16) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_cvtph_ps(h);
  }
}

template <bool kBf16>
inline float Load1(uint16_t v) {
  if constexpr (kBf16) {
    return BF16ToF32(v);
  } else {
    return _cvtsh_ss(v);
  }
}

inline float Sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// out[r * n] = x[r, :] . wr + beta * out[r * n] for the M rows of x: one weight row, converted
// once per 8 elements and used by every x row, in A independent accumulators per row (so the
// FMA latency hides behind the loads).
template <bool kBf16, int M, int A>
void Row(const float* x, size_t k, const uint16_t* wr, float* out, size_t n, float beta) {
  __m256 acc[M][A];
  for (int r = 0; r < M; ++r) {
    for (int a = 0; a < A; ++a) acc[r][a] = _mm256_setzero_ps();
  }
  size_t l = 0;
  for (; l + 8 * A <= k; l += 8 * A) {
    for (int a = 0; a < A; ++a) {
      const __m256 w = Load8<kBf16>(wr + l + 8 * a);
      for (int r = 0; r < M; ++r) {
        acc[r][a] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + r * k + l + 8 * a), acc[r][a]);
      }
    }
  }
  for (int r = 0; r < M; ++r) {
    for (int a = 1; a < A; ++a) acc[r][0] = _mm256_add_ps(acc[r][0], acc[r][a]);
    float sum = Sum(acc[r][0]);
    for (size_t t = l; t < k; ++t) sum += x[r * k + t] * Load1<kBf16>(wr[t]);
    float& o = out[r * n];
    o = beta == 0.0f ? sum : sum + beta * o;
  }
}

// Weight row j against the x rows from r0 on: fours, then one to three.
template <bool kBf16>
[[gnu::always_inline]] inline void RowsFrom(const float* x, const uint16_t* w, float* y, int m,
                                            size_t n, size_t k, float beta, int j, int r0) {
  const uint16_t* wr = w + j * k;
  int r = r0;
  for (; r + 4 <= m; r += 4) Row<kBf16, 4, 2>(x + r * k, k, wr, y + r * n + j, n, beta);
  switch (m - r) {
    case 1:
      Row<kBf16, 1, 4>(x + r * k, k, wr, y + r * n + j, n, beta);
      break;
    case 2:
      Row<kBf16, 2, 2>(x + r * k, k, wr, y + r * n + j, n, beta);
      break;
    case 3:
      Row<kBf16, 3, 2>(x + r * k, k, wr, y + r * n + j, n, beta);
      break;
    default:
      break;
  }
}

// Two weight rows against four x rows: each converted weight vector feeds four FMAs and each x
// vector two, so with several rows the loop is bound by the FMAs rather than the loads (Row's
// one weight row needs a load of x per FMA).
template <bool kBf16>
void Block2x4(const float* x, size_t k, const uint16_t* w0, const uint16_t* w1, float* out,
              size_t n, float beta) {
  __m256 acc0[4], acc1[4];
  for (int r = 0; r < 4; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  size_t l = 0;
  for (; l + 8 <= k; l += 8) {
    const __m256 a = Load8<kBf16>(w0 + l), b = Load8<kBf16>(w1 + l);
    for (int r = 0; r < 4; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * k + l);
      acc0[r] = _mm256_fmadd_ps(a, xv, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(b, xv, acc1[r]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    float s0 = Sum(acc0[r]), s1 = Sum(acc1[r]);
    for (size_t t = l; t < k; ++t) {
      s0 += x[r * k + t] * Load1<kBf16>(w0[t]);
      s1 += x[r * k + t] * Load1<kBf16>(w1[t]);
    }
    float* o = out + r * n;
    o[0] = beta == 0.0f ? s0 : s0 + beta * o[0];
    o[1] = beta == 0.0f ? s1 : s1 + beta * o[1];
  }
}

template <bool kBf16>
void Rows(const float* x, const uint16_t* w, float* y, int m, size_t n, size_t k, float beta,
          int n_begin, int n_end) {
  const int m4 = m / 4 * 4;
  int j = n_begin;
  // Pairs of weight rows over the x rows in fours, then the one to three x rows left.
  for (; m4 > 0 && j + 2 <= n_end; j += 2) {
    for (int r = 0; r < m4; r += 4) {
      Block2x4<kBf16>(x + r * k, k, w + j * k, w + (j + 1) * k, y + r * n + j, n, beta);
    }
    if (m4 < m) {
      RowsFrom<kBf16>(x, w, y, m, n, k, beta, j, m4);
      RowsFrom<kBf16>(x, w, y, m, n, k, beta, j + 1, m4);
    }
  }
  // A last unpaired weight row, or every row when there are fewer than four x rows.
  for (; j < n_end; ++j) RowsFrom<kBf16>(x, w, y, m, n, k, beta, j, 0);
}

}  // namespace

void MatMulWT16RowsAvx2(const float* x, const uint16_t* w, bool bf16, float* y, int m, int n, int k,
                        float beta, int n_begin, int n_end) {
  if (bf16) {
    Rows<true>(x, w, y, m, n, k, beta, n_begin, n_end);
  } else {
    Rows<false>(x, w, y, m, n, k, beta, n_begin, n_end);
  }
}

void ConvertToF32Avx2(const uint16_t* src, bool bf16, size_t count, float* dst) {
  size_t i = 0;
  if (bf16) {
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, Load8<true>(src + i));
    for (; i < count; ++i) dst[i] = Load1<true>(src[i]);
  } else {
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, Load8<false>(src + i));
    for (; i < count; ++i) dst[i] = Load1<false>(src[i]);
  }
}

}  // namespace arbor::kernels::internal
