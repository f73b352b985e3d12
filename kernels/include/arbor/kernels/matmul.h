// Dense products with row-major weights as checkpoints store them ([out, in]), through OpenBLAS.
#pragma once

namespace arbor::kernels {

// y[m, n] = x[m, k] . w[n, k]^T + beta * y, all row-major and dense. A one-row product (m = 1,
// every token of a batch-1 decode) runs as SGEMV: OpenBLAS's one-row SGEMM streams the weights
// at about a third of SGEMV's rate (docs/PERFORMANCE.md).
void MatMulWTCpu(const float* x, const float* w, float* y, int m, int n, int k, float beta);

}  // namespace arbor::kernels
