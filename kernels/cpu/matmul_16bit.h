// The AVX2/FMA/F16C kernels behind matmul.h's 16-bit paths, compiled for those instructions
// alone (matmul_avx2.cc); matmul.cc calls them only on CPUs that have them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace arbor::kernels::internal {

void MatMulWT16RowsAvx2(const float* x, const uint16_t* w, bool bf16, float* y, int m, int n, int k,
                        float beta, int n_begin, int n_end);

void ConvertToF32Avx2(const uint16_t* src, bool bf16, size_t count, float* dst);

}  // namespace arbor::kernels::internal
