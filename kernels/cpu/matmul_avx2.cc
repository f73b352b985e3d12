// Built with -mavx2 -mfma -mf16c (kernels/CMakeLists.txt); reached only through matmul.cc's
// CPU check.
#include "matmul_avx2.h"

#include <immintrin.h>

#include <algorithm>

#include "arbor/common/dtype.h"
#include "arbor/kernels/matmul.h"

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

// The eight horizontal sums of v0..v7, in order, in one vector.
inline __m256 Sum8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4, __m256 v5, __m256 v6,
                   __m256 v7) {
  const __m256 s01 = _mm256_hadd_ps(v0, v1), s23 = _mm256_hadd_ps(v2, v3);
  const __m256 s45 = _mm256_hadd_ps(v4, v5), s67 = _mm256_hadd_ps(v6, v7);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  // Lanes 0-3: the low halves' sums of v0..v3 and lanes 4-7 their high halves'; same for v4..v7.
  const __m256 lo = _mm256_permute2f128_ps(s0123, s4567, 0x20);
  const __m256 hi = _mm256_permute2f128_ps(s0123, s4567, 0x31);
  return _mm256_add_ps(lo, hi);
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

// Rows [0, M) of x against one panel of kPanelRows weight rows: per element of k, one
// broadcast of each x row and the panel's two vectors, 2 * M independent accumulators (six rows:
// twelve, enough to keep both FMA pipes busy through their latency), stored once at the end.
// `cols` (1-16) of the panel's columns are real; the rest are its zero padding.
template <int M>
void PanelRows(const float* x, size_t k, const float* panel, float* y, size_t n, int cols,
               float beta) {
  // Every loop over the rows is unrolled, so the accumulators live in registers (GCC kept them
  // on the stack otherwise, a store per FMA pair, and ran at half the rate).
  __m256 lo[M], hi[M];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (size_t l = 0; l < k; ++l) {
    const __m256 b0 = _mm256_loadu_ps(panel + l * kPanelRows);
    const __m256 b1 = _mm256_loadu_ps(panel + l * kPanelRows + 8);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * k + l);
      lo[r] = _mm256_fmadd_ps(a, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(a, b1, hi[r]);
    }
  }
  if (cols == kPanelRows) {
    const __m256 b = _mm256_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      float* o = y + r * n;
      __m256 v0 = lo[r], v1 = hi[r];
      if (beta != 0.0f) {
        v0 = _mm256_fmadd_ps(b, _mm256_loadu_ps(o), v0);
        v1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(o + 8), v1);
      }
      _mm256_storeu_ps(o, v0);
      _mm256_storeu_ps(o + 8, v1);
    }
    return;
  }
  alignas(32) float t[M][kPanelRows];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r) {
    _mm256_store_ps(t[r], lo[r]);
    _mm256_store_ps(t[r] + 8, hi[r]);
  }
  for (int r = 0; r < M; ++r) {
    float* o = y + r * n;
    for (int j = 0; j < cols; ++j) o[j] = beta == 0.0f ? t[r][j] : t[r][j] + beta * o[j];
  }
}

}  // namespace

void MatMulPackedAvx2(const float* x, const float* packed, float* y, int m, int n, int k,
                      float beta, int p_begin, int p_end) {
  const size_t kk = k, nn = n;
  // Rows of x in blocks of about 16 KiB (a multiple of six rows), so the block stays in L1 while
  // every panel passes it: the six broadcasts per element come from L1, the panel's two vectors
  // from L2 at worst.
  const int block = std::max(6, static_cast<int>((16 << 10) / (4 * kk)) / 6 * 6);
  using Tail = void (*)(const float*, size_t, const float*, float*, size_t, int, float);
  static constexpr Tail kTail[] = {nullptr,      PanelRows<1>, PanelRows<2>,
                                   PanelRows<3>, PanelRows<4>, PanelRows<5>};
  for (int r0 = 0; r0 < m; r0 += block) {
    const int r_end = std::min(m, r0 + block);
    for (int p = p_begin; p < p_end; ++p) {
      const float* panel = packed + static_cast<size_t>(p) * kk * kPanelRows;
      const int j = p * kPanelRows, cols = std::min(kPanelRows, n - j);
      int r = r0;
      for (; r + 6 <= r_end; r += 6) {
        PanelRows<6>(x + r * kk, kk, panel, y + r * nn + j, nn, cols, beta);
      }
      // The one to five rows left.
      if (r < r_end) kTail[r_end - r](x + r * kk, kk, panel, y + r * nn + j, nn, cols, beta);
    }
  }
}

void MatMulWT16RowsAvx2(const float* x, const uint16_t* w, bool bf16, float* y, int m, int n, int k,
                        float beta, int n_begin, int n_end) {
  if (bf16) {
    Rows<true>(x, w, y, m, n, k, beta, n_begin, n_end);
  } else {
    Rows<false>(x, w, y, m, n, k, beta, n_begin, n_end);
  }
}

void BlockScoresAvx2(const float* q, int m, int hd, const float* k, int valid, float* s, int ld) {
  const int hd8 = hd / 8 * 8;
  for (int row = 0; row < m; ++row) {
    const float* qr = q + static_cast<size_t>(row) * hd;
    float* sr = s + static_cast<size_t>(row) * ld;
    int t = 0;
    // Eight keys at a time, one accumulator each, reduced together (Sum8).
    for (; hd8 == hd && t + 8 <= valid; t += 8) {
      const float* k0 = k + static_cast<size_t>(t) * hd;
      __m256 a[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_ps();
      for (int d = 0; d < hd; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qr + d);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          a[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + j * hd + d), a[j]);
        }
      }
      _mm256_storeu_ps(sr + t, Sum8(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]));
    }
    for (; t < valid; ++t) {
      const float* kt = k + static_cast<size_t>(t) * hd;
      __m256 a = _mm256_setzero_ps();
      for (int d = 0; d < hd8; d += 8) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(qr + d), _mm256_loadu_ps(kt + d), a);
      }
      float sum = Sum(a);
      for (int d = hd8; d < hd; ++d) sum += qr[d] * kt[d];
      sr[t] = sum;
    }
  }
}

void BlockAccumulateAvx2(const float* s, int m, int valid, int ld, const float* v, int hd,
                         float* o) {
  for (int row = 0; row < m; ++row) {
    const float* sr = s + static_cast<size_t>(row) * ld;
    float* orow = o + static_cast<size_t>(row) * hd;
    int d = 0;
    // 32 output columns at a time in registers across the block's tokens.
    for (; d + 32 <= hd; d += 32) {
      __m256 a0 = _mm256_loadu_ps(orow + d), a1 = _mm256_loadu_ps(orow + d + 8);
      __m256 a2 = _mm256_loadu_ps(orow + d + 16), a3 = _mm256_loadu_ps(orow + d + 24);
      for (int t = 0; t < valid; ++t) {
        const __m256 w = _mm256_broadcast_ss(sr + t);
        const float* vt = v + static_cast<size_t>(t) * hd + d;
        a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt), a0);
        a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 8), a1);
        a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 16), a2);
        a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vt + 24), a3);
      }
      _mm256_storeu_ps(orow + d, a0);
      _mm256_storeu_ps(orow + d + 8, a1);
      _mm256_storeu_ps(orow + d + 16, a2);
      _mm256_storeu_ps(orow + d + 24, a3);
    }
    for (; d + 8 <= hd; d += 8) {
      __m256 a = _mm256_loadu_ps(orow + d);
      for (int t = 0; t < valid; ++t) {
        a = _mm256_fmadd_ps(_mm256_broadcast_ss(sr + t),
                            _mm256_loadu_ps(v + static_cast<size_t>(t) * hd + d), a);
      }
      _mm256_storeu_ps(orow + d, a);
    }
    for (; d < hd; ++d) {
      float a = orow[d];
      for (int t = 0; t < valid; ++t) a += sr[t] * v[static_cast<size_t>(t) * hd + d];
      orow[d] = a;
    }
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
