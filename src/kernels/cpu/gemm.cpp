#include "kernels/cpu/gemm.h"

#include <dnnl.h>
#include <omp.h>

#include <vector>

#include "rnnkit/error.h"
#include "rnnkit/threading.h"

namespace rnnkit::kernels::cpu {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  // oneDNN's OpenMP build takes its team size from the calling thread's OpenMP
  // default: make it rnnkit's (inside a parallel region it runs on one thread).
  const int nthreads = rnnkit::get_num_threads();
  if (!omp_in_parallel() && omp_get_max_threads() != nthreads) omp_set_num_threads(nthreads);
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                B, ldb, beta, C, ldc);
  RNNKIT_CHECK(st == dnnl_success, "gemm: oneDNN sgemm failed with status ", int(st), " (M=", M,
               ", N=", N, ", K=", K, ", lda=", lda, ", ldb=", ldb, ", ldc=", ldc, ")");
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc) {
  // Row i of C accumulates in a local buffer so that beta is applied once.
  std::vector<double> acc(static_cast<size_t>(N));
#pragma omp parallel for schedule(static) firstprivate(acc) num_threads(rnnkit::get_num_threads()) \
    if (M * N * K > 32768)
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) acc[j] = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double a = trans_a ? A[k * lda + i] : A[i * lda + k];
      if (!trans_b) {
        const double* b = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) acc[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; ++j) acc[j] += a * B[j * ldb + k];
      }
    }
    double* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) c[j] = alpha * acc[j] + (beta == 0.0 ? 0.0 : beta * c[j]);
  }
}

}  // namespace rnnkit::kernels::cpu
