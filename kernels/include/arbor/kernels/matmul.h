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
  // A small matrix's elements (at most kSmallMatrixElements) in f32, laid out by PackWeights,
  // or null. model::Matrix keeps one for each such matrix, of any dtype.
  const float* packed = nullptr;
  // 16-bit weights: the same elements row-major in f32, or null. A small 16-bit matrix keeps
  // one too, for its products past kPackedMaxRows (SGEMM on it, no conversion per call).
  const float* f32 = nullptr;
};

// y[m, n] = x[m, k] . w[n, k]^T + beta * y, all row-major and dense; beta 0 never reads y.
//  - A small matrix with its packed copy, kPackedMinRows to kPackedMaxRows rows: Arbor's own
//    kernel on that copy (below). Such a matrix sits in cache, so its products are bound by
//    arithmetic, and OpenBLAS's SGEMM packs both operands on every call, which costs more than
//    it saves for few rows (the embedded model's decode steps: docs/PERFORMANCE.md).
//  - f32 weights: one row (every token of a batch-1 decode) runs as SGEMV, OpenBLAS's one-row
//    SGEMM streaming the weights at about a third of SGEMV's rate (docs/PERFORMANCE.md); more
//    rows as SGEMM.
//  - 16-bit weights, up to kDirectRows rows (decode steps, the experts' row groups): each
//    weight row is converted in registers and multiplied into every x row while it is in L1,
//    the rows of w split over ParallelFor's threads; so the weights are read once, at 2 bytes
//    each, and no OpenBLAS thread runs between two such products.
//  - 16-bit weights, more rows (prefill): SGEMM on w.f32 where the view has it, else tiles of
//    w converted to f32 on the calling thread, each an SGEMM; the conversion is amortised over
//    the rows. (Converting on the pool's
//    threads too made the steps slower: OpenBLAS's workers spin between calls and the two
//    sets of threads took turns on 2 cores. docs/PERFORMANCE.md has the figures.)
void MatMulWT(const float* x, WeightView w, float* y, int m, int n, int k, float beta);

// Measured on the mid model (docs/PERFORMANCE.md): 64 beat 8, 16 and 32 at batch 16 and 64,
// and always-direct lost a third of the prefill rate.
inline constexpr int kDirectRows = 64;
// A matrix of at most this many elements (1 MiB in f32: it stays in cache) is compute-bound,
// not bound by reading it, and keeps a packed f32 copy.
inline constexpr int64_t kSmallMatrixElements = int64_t{1} << 18;
// A packed matrix's products of kPackedMinRows to kPackedMaxRows rows of x run on the packed
// copy. One row: as fast as SGEMV or the direct kernel, which read fewer bytes. Measured alone on
// one core, [n, k] = [320, 192]: 2 rows 53 GFLOP/s against SGEMM's 15, 8 rows 88 against 51,
// 48 rows 109 against 92, 128 rows 109 against 99, 200 rows even (104, 103); longer products
// (prefill steps) stay SGEMM, which OpenBLAS threads.
inline constexpr int kPackedMinRows = 2;
inline constexpr int kPackedMaxRows = 256;
// Whether MatMulWT runs a product of m rows with a matrix that has a packed copy on it.
inline bool UsesPackedKernel(int m) { return m >= kPackedMinRows && m <= kPackedMaxRows; }
// Whether MatMulWT runs a 16-bit product of m rows in the direct kernel (no packed copy used).
inline bool UsesDirectKernel(int m, bool has_packed) {
  return m <= kDirectRows && !(has_packed && UsesPackedKernel(m));
}

// The packed layout: w's rows in panels of kPanelRows (the last one padded with zeros), each
// panel stored k-major, so panel p holds w[16p + j][l] at [p][l][j]. The kernel reads one
// panel's 16 outputs' weights for an element of k as two contiguous vectors.
inline constexpr int kPanelRows = 16;
inline size_t PackedFloats(int n, int k) {
  return static_cast<size_t>((n + kPanelRows - 1) / kPanelRows) * kPanelRows * k;
}
// Writes w ([n, k], any dtype; `packed` ignored) to out (PackedFloats(n, k) floats).
void PackWeights(WeightView w, int n, int k, float* out);

// MatMulWT on a packed copy alone, the panels split over ParallelFor's threads.
void MatMulWTPacked(const float* x, const float* packed, float* y, int m, int n, int k, float beta);

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
