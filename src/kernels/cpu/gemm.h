#pragma once
// Row-major GEMM for the kernel layer: C = alpha * op(A) * op(B) + beta * C,
// op(X) = X or X^T. float32 goes to oneDNN's sgemm; float64 (used only for
// gradient checks) to a plain blocked loop.
//   A: op(A) is [M, K], stored with leading dimension lda (row stride)
//   B: op(B) is [K, N], leading dimension ldb
//   C: [M, N], leading dimension ldc; read when beta != 0, written always
// No allocation, no aliasing between C and A/B.
#include <cstdint>

namespace rnnkit::kernels::cpu {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc);

}  // namespace rnnkit::kernels::cpu
