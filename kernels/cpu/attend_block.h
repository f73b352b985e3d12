// One step of blocked attention with an online softmax, shared by the paged and tree attention
// kernels (internal to kernels/cpu): rows of packed queries attend to one KV block, and their
// running (max, denominator, output) state is updated in place.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "fast_exp.h"

namespace arbor::kernels::internal {

// The block's two products for few rows (a decode step's queries: a few heads of one token),
// without OpenBLAS: at these sizes its SGEMM spent far longer preparing each call than
// multiplying (the embedded model's batch-48 decode spent half its step in attention's SGEMM
// calls, docs/PERFORMANCE.md). AVX2/FMA where the CPU has it (matmul.cc dispatches).
//   s[m, ld][:, :valid] = q[m, hd] . k[valid, hd]^T
void BlockScores(const float* q, int m, int hd, const float* k, int valid, float* s, int ld);
//   o[m, hd] += s[m, ld][:, :valid] . v[valid, hd]
void BlockAccumulate(const float* s, int m, int valid, int ld, const float* v, int hd, float* o);
// Products of at most this many multiply-adds use them; larger ones (prefill chunks) SGEMM.
inline constexpr int64_t kSmallBlockMacs = int64_t{1} << 15;

// qg [m, hd] holds scaled queries; kb, vb [valid, hd] are one block's K and V; sc [m, ld] is
// scratch. visible(row) is how many leading tokens of the block the row may see (causal mask).
// og [m, hd], mx [m] and den [m] carry each row's state from block to block.
template <typename Visible>
void AttendBlock(const float* qg, int m, int hd, const float* kb, const float* vb, int valid,
                 float* sc, int ld, float* og, float* mx, float* den, Visible visible) {
  const bool small = static_cast<int64_t>(m) * valid * hd <= kSmallBlockMacs;
  // sc[m, valid] = qg . kb^T
  if (small) {
    BlockScores(qg, m, hd, kb, valid, sc, ld);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, valid, hd, 1.0f, qg, hd, kb, hd, 0.0f,
                sc, ld);
  }
  for (int row = 0; row < m; ++row) {
    const int vis = std::clamp(visible(row), 0, valid);
    float* srow = sc + static_cast<size_t>(row) * ld;
    float* orow = og + static_cast<size_t>(row) * hd;
    if (vis == 0) {
      std::fill(srow, srow + valid, 0.0f);
      continue;
    }
    const float block_max = *std::max_element(srow, srow + vis);
    const float new_max = std::max(mx[row], block_max);
    const float correction = std::exp(mx[row] - new_max);  // 0 on a row's first block
    const float sum = ExpShiftSum(srow, vis, new_max);
    std::fill(srow + vis, srow + valid, 0.0f);
    den[row] = den[row] * correction + sum;
    mx[row] = new_max;
    if (correction != 1.0f) {
      for (int d = 0; d < hd; ++d) orow[d] *= correction;
    }
  }
  // og[m, hd] += sc[m, valid] . vb
  if (small) {
    BlockAccumulate(sc, m, valid, ld, vb, hd, og);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, valid, 1.0f, sc, ld, vb, hd, 1.0f,
                og, hd);
  }
}

}  // namespace arbor::kernels::internal
