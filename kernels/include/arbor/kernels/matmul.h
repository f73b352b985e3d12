// Dense products with row-major weights as checkpoints store them ([out, in]): f32 weights
// through OpenBLAS, 16-bit weights (bf16, f16: kept as the checkpoint stores them, half the
// bytes per token) through Arbor's own AVX2 kernels with f32 accumulation.
#pragma once

#include <cstdint>

#include "arbor/common/dtype.h"

namespace arbor::kernels {

// A weight matrix's elements in memory: f32, bf16 or f16, row-major [n, k], dense.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  // 16-bit weights: an f32 copy of the same elements, or null. A small matrix keeps one
  // (model::Matrix) so that its compute-bound products skip the conversion.
  const float* f32 = nullptr;
};

// y[m, n] = x[m, k] . w[n, k]^T + beta * y, all row-major and dense; beta 0 never reads y.
//  - f32 weights: one row (every token of a batch-1 decode) runs as SGEMV, OpenBLAS's one-row
//    SGEMM streaming the weights at about a third of SGEMV's rate (docs/PERFORMANCE.md); more
//    rows as SGEMM.
//  - 16-bit weights, up to kDirectRows rows (decode steps, the experts' row groups): each
//    weight row is converted in registers and multiplied into every x row while it is in L1,
//    the rows of w split over ParallelFor's threads; so the weights are read once, at 2 bytes
//    each, and no OpenBLAS thread runs between two such products.
//  - 16-bit weights, more rows (prefill), or a small matrix (kSmallMatrixElements) from
//    kSmallMatrixRows rows on: SGEMM on w.f32 when the view has it, else tiles of w converted
//    to f32 on the calling thread,
//    each an SGEMM; the conversion is amortised over the rows. (Converting on the pool's
//    threads too made the steps slower: OpenBLAS's workers spin between calls and the two
//    sets of threads took turns on 2 cores. docs/PERFORMANCE.md has the figures.)
void MatMulWT(const float* x, WeightView w, float* y, int m, int n, int k, float beta);

// Measured on the mid model (docs/PERFORMANCE.md): 64 beat 8, 16 and 32 at batch 16 and 64,
// and always-direct lost a third of the prefill rate.
inline constexpr int kDirectRows = 64;
// A matrix of at most this many elements (1 MiB in f32: it stays in cache) is compute-bound,
// not bound by reading it: from kSmallMatrixRows rows on, SGEMM on its f32 copy beats the direct
// kernel (the embedded model, in process: batch-16 decode 5.1-5.4k tokens/s against 3.3-3.4k,
// batch 64 5.7-5.8k against 3.8k; from 8 rows on, batch 16 fell to 4.1k).
inline constexpr int64_t kSmallMatrixElements = int64_t{1} << 18;
inline constexpr int kSmallMatrixRows = 16;
// Whether MatMulWT runs a 16-bit product of m rows and an [n, k] matrix in the direct kernel.
inline bool UsesDirectKernel(int m, int n, int k) {
  return m <= kDirectRows &&
         (m < kSmallMatrixRows || static_cast<int64_t>(n) * k > kSmallMatrixElements);
}

// The f32 case of MatMulWT.
void MatMulWTCpu(const float* x, const float* w, float* y, int m, int n, int k, float beta);

// The 16-bit direct kernel over weight rows [n_begin, n_end) only, on the calling thread
// (AVX2/FMA/F16C where the CPU has them, otherwise a scalar loop). For the kernel's tests and
// for callers that split the rows themselves.
void MatMulWT16Rows(const float* x, const uint16_t* w, DType dtype, float* y, int m, int n, int k,
                    float beta, int n_begin, int n_end);

// Converts rows [row, row + rows) of a 16-bit [*, k] matrix to f32.
void ConvertRowsToF32(const uint16_t* w, DType dtype, int k, int row, int rows, float* out);

}  // namespace arbor::kernels
