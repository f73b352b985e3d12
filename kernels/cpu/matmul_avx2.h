// The AVX2/FMA/F16C kernels behind matmul.h's 16-bit and packed paths, compiled for those
// instructions alone (matmul_avx2.cc); matmul.cc calls them only on CPUs that have them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace arbor::kernels::internal {

void MatMulWT16RowsAvx2(const float* x, const uint16_t* w, bool bf16, float* y, int m, int n, int k,
                        float beta, int n_begin, int n_end);

// MatMulWTPacked over the panels [p_begin, p_end) of `packed` (matmul.h's PackWeights layout).
void MatMulPackedAvx2(const float* x, const float* packed, float* y, int m, int n, int k,
                      float beta, int p_begin, int p_end);

// attend_block.h's small products (BlockScores, BlockAccumulate).
void BlockScoresAvx2(const float* q, int m, int hd, const float* k, int valid, float* s, int ld);
void BlockAccumulateAvx2(const float* s, int m, int valid, int ld, const float* v, int hd,
                         float* o);

void ConvertToF32Avx2(const uint16_t* src, bool bf16, size_t count, float* dst);

}  // namespace arbor::kernels::internal
