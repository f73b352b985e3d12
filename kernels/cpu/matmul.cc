#include "arbor/kernels/matmul.h"

#include <cblas.h>

namespace arbor::kernels {

void MatMulWTCpu(const float* x, const float* w, float* y, int m, int n, int k, float beta) {
  if (m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, beta, y, n);
}

}  // namespace arbor::kernels
