#pragma once
// Float arrays and rows through the recurrent kernels' vector activations
// (kernels/cpu/simd_math.h: exp 1 ulp, tanh 2, sigmoid 3 against double libm),
// for the tensor ops that would otherwise call the scalar C library per
// element: exp, tanh, sigmoid, softmax, log_softmax, and the cross-entropy
// loss. Each function returns false, computing nothing, where there are no
// vector kernels (a CPU without AVX2, or RNNKIT_ISA=scalar); the double
// overloads always return false, so that dtype-generic callers fall back to
// their own loops. The loops around the kernels are compiled for AVX-512, AVX2 and plain
// x86-64 and chosen by the CPU (the same results on each).
#include <cstdint>

namespace rnnkit::native {

enum class VectorFn { Exp, Tanh, Sigmoid };

// Whether the functions below compute (vector kernels are active).
bool have_vector_rows();

// y[i] = fn(x[i]) for i < n (y may be x). One thread.
bool vector_map(VectorFn fn, int64_t n, const float* x, float* y);
inline bool vector_map(VectorFn, int64_t, const double*, double*) { return false; }

// max over row[0, n) (NaN ignored) and the sum of exp(row[c] - shift) in
// double into *sum, where shift = max except that a row whose max is -inf
// takes 0 (its sum is then 0); the shift is stored in *max. One thread.
bool exp_sum(const float* row, int64_t n, float* max, double* sum);
inline bool exp_sum(const double*, int64_t, double*, double*) { return false; }

// out[c] = scale * exp(row[c] - shift) for c < n (out may be row). One thread.
bool scaled_exp(const float* row, int64_t n, float shift, float scale, float* out);
inline bool scaled_exp(const double*, int64_t, double, double, double*) { return false; }

// y = softmax (or, with log, log_softmax) of x [outer, n, inner] along n, both
// contiguous, on the team (rows split from 2^16 elements): each slice shifted
// by its max in float (0 where that is -inf), exps by the kernel, summed in
// double in i order per column (rows: in 8 interleaved chains), and scaled by
// float(1 / sum) (log: (x - shift) - float(log(sum))). A slice holding +inf or
// NaN, or only -inf, gives NaN throughout, as in PyTorch.
bool softmax_float(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log);

}  // namespace rnnkit::native
