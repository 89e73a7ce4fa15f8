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

// Whether gemm(false, true, M, N, K, 1, A, lda, W, ldb, beta, C, ldc), beta 0
// or 1, takes oneDNN's brgemm matmul reading W [N, K] through its strides
// instead of sgemm (gemm.cpp, plain_weights_gemm; from 128 rows on, for its
// rows in whole multiples of 16, the last M % 16 by sgemm): by the shape alone,
// where oneDNN has that kernel. Its sums do not depend on the thread count nor on whether it
// runs inside a parallel region.
bool gemm_takes_plain_matmul(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc);

// C[M, N] = A[M, K] W^T (W [N, K], row stride ldw) on the calling thread alone:
// a thread's share of a product inside a parallel region (the small-batch
// forward's input projection). With matmul, through oneDNN's brgemm matmul
// where this oneDNN has one (AVX-512), else by sgemm. The two sum in different
// orders, while brgemm's order for an element does not depend on N: so that
// the result does not depend on how the product is shared among threads, every
// share of one product must pass the same matmul, decided on the whole
// product's shape by prefer_this_thread_matmul.
void gemm_on_this_thread(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* W,
                         int64_t ldw, float* C, int64_t ldc, bool matmul);
// Whether a product of M x N x K (the whole of it, before it is shared) takes
// the brgemm matmul in gemm_on_this_thread: 16 to 32 rows of large layers.
// Both threads of a Zen 5 at once, brgemm / sgemm on one share: 25 x 256 x 512
// 36 / 42 us, 25 x 512 x 1024 224 / 252, 25 x 256 x 256 18 / 19, but 50 x 256
// x 512 82 / 70; inside the forward the primitive's lookup and call and the
// copy out of its dense product cost a few us more, which smaller layers do
// not win back (LSTM H = 256, one row, 25 steps: 1.05 of the time with sgemm);
// nor do fewer rows: forward of LSTM H = 512 with W_hh packed beforehand, us,
// brgemm / sgemm: N = 1 T = 1 81 / 47-50, N = 4 T = 1 92-93 / 66-67, N = 1 T = 8
// 219-225 / 197, N = 8 T = 2 211 / 229-231, N = 1 T = 16 383-394 / 412-419.
bool prefer_this_thread_matmul(int64_t M, int64_t N, int64_t K);
// Many products with the same weights (one per time step): C[M, N] += A[M, K] W^T
// (W [N, K] row-major) or A W (W [K, N]), through oneDNN's matmul primitive with W
// reordered once into
// the primitive's own blocked layout instead of being re-packed by every sgemm
// call. Primitives are created on first use and cached per shape, strides and
// thread count.
//
// Floats that packed_gemm_pack writes for these sizes; 0 when this oneDNN has no
// such primitive (callers then use gemm).
int64_t packed_gemm_size(int64_t M, int64_t N, int64_t K);
// Reorders the weights into packed, which holds capacity floats: W [N, K] (row
// stride ldw) for C += A W^T, or, with w_is_kn, W [K, N] for C += A W. Returns
// false, writing nothing, when the layout needs more (the thread count changed
// since packed_gemm_size) or no primitive exists.
bool packed_gemm_pack(int64_t M, int64_t N, int64_t K, const float* W, int64_t ldw, bool w_is_kn,
                      float* packed, int64_t capacity);
// C[M, N] (row stride ldc) += A[M, K] (row stride lda) op(W), W as packed for (M,
// N, K); with accumulate = false, C = A op(W). Falls back to gemm with W (row
// stride ldw) if no primitive takes these strides with that packing.
void packed_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* packed,
                 const float* W, int64_t ldw, bool w_is_kn, float* C, int64_t ldc, bool accumulate = true);
// Whether packed_gemm for (M, N, K) runs on operands with these row strides
// where they are. Where not, it copies A into a dense buffer before the product
// and, for C, makes the product apart and adds it to C after: passes of their
// own (one thread, or another fork/join) that a caller walking those rows anyway
// (a recurrent step's pointwise pass) can fuse into its walk instead, passing
// dense operands.
bool packed_gemm_takes_strides(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldc);

// The bfloat16 products off the small-batch path (RnnWeights::bf16_products):
// C[M, N] (row stride ldc) = A[M, K] W^T, A (row stride lda) and W [N, K] (row
// stride ldw) given as bfloat16 bits, through oneDNN's bfloat16 brgemm matmul:
// each product exact, the sums float32 (on AVX512_BF16's dot instructions).
// Returns false, doing nothing, where this oneDNN has no such kernel here (a
// CPU without AVX512_BF16). Primitives are cached per shape, strides and thread
// count.
bool bf16_gemm(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* W, int64_t ldw,
               float* C, int64_t ldc);
// Whether bf16_gemm runs on this CPU (probed once).
bool bf16_gemm_available();
// The bf16_gemm calls that ran since the program started (tests).
int64_t bf16_gemm_calls();

}  // namespace rnnkit::kernels::cpu
