#include "tensor/vector_rows.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/rnn_simd.h"

namespace rnnkit::native {

namespace {

namespace simd = kernels::cpu::simd;

// The loops around the kernels' exp, compiled for each instruction set (the
// library's baseline is plain x86-64, SSE2) and chosen by the CPU. Each lane
// or chain keeps its order, so every version gives the same bits.
#define RNNKIT_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Exps are taken a piece at a time through a buffer that stays in L1.
constexpr int64_t kPiece = 512;

simd::ArrayFn array_fn(const simd::Kernels& k, VectorFn fn) {
  switch (fn) {
    case VectorFn::Exp: return k.exp;
    case VectorFn::Tanh: return k.tanh;
    case VectorFn::Sigmoid: return k.sigmoid;
  }
  return nullptr;
}

// The sums run in 8 independent chains, the max too: one chain's latency
// bounded them at ~4 cycles an element. Returns the shift (the max, or 0 where
// it is -inf) and the sum of exp(row - shift) in double; with exps, the exps
// are left there.
RNNKIT_VECTOR_CLONES float row_exp_sum(simd::ArrayFn exp, const float* row, int64_t n, double* sum,
                                       float* exps = nullptr) {
  constexpr int kChains = 8;
  float m[kChains];
  std::fill(m, m + kChains, kNegInf);
  int64_t c = 0;
  // omp simd: GCC keeps std::max's NaN rule (a < b ? b : a) scalar
  // otherwise; as a vector compare and blend it is the same rule.
  for (; c + kChains <= n; c += kChains)
#pragma omp simd
    for (int u = 0; u < kChains; ++u) m[u] = std::max(m[u], row[c + u]);
  for (; c < n; ++c) m[0] = std::max(m[0], row[c]);
  for (int u = 1; u < kChains; ++u) m[0] = std::max(m[0], m[u]);
  const float shift = m[0] == kNegInf ? 0.f : m[0];
  double s[kChains] = {};
  float buffer[kPiece];
  for (int64_t c0 = 0; c0 < n; c0 += kPiece) {
    const int64_t len = std::min(kPiece, n - c0);
    float* e = exps != nullptr ? exps + c0 : buffer;
    for (int64_t j = 0; j < len; ++j) e[j] = row[c0 + j] - shift;
    exp(len, e, e);
    int64_t j = 0;
    for (; j + kChains <= len; j += kChains)
      for (int u = 0; u < kChains; ++u) s[u] += e[j + u];
    for (; j < len; ++j) s[0] += e[j];
  }
  *sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  return shift;
}

// One row of softmax (y = exp(x - shift) * float(1 / sum), the exps kept in
// y and scaled there) or log_softmax (y = (x - shift) - float(log(sum))).
RNNKIT_VECTOR_CLONES void softmax_row(simd::ArrayFn exp, const float* x, float* y, int64_t n, bool log) {
  double sum;
  const float shift = row_exp_sum(exp, x, n, &sum, log ? nullptr : y);
  if (log) {
    const float ls = static_cast<float>(std::log(sum));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] - shift - ls;
    return;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

// Columns [0, w) (w <= kPiece) of one slice [n, inner] of softmax or
// log_softmax along n: the max, the exps and their sums across the columns as
// vectors, each column's sum in i order.
RNNKIT_VECTOR_CLONES void softmax_columns(simd::ArrayFn exp, const float* x, float* y, int64_t n, int64_t inner,
                                          int64_t w, bool log) {
  float shift[kPiece];
  double s[kPiece];
  std::fill(shift, shift + w, kNegInf);
  for (int64_t i = 0; i < n; ++i)
#pragma omp simd
    for (int64_t b = 0; b < w; ++b) shift[b] = std::max(shift[b], x[i * inner + b]);
  for (int64_t b = 0; b < w; ++b) {
    if (shift[b] == kNegInf) shift[b] = 0.f;
    s[b] = 0.0;
  }
  // log_softmax needs the exps only for their sums: a buffer, not y.
  float buffer[kPiece];
  for (int64_t i = 0; i < n; ++i) {
    float* e = log ? buffer : y + i * inner;
    for (int64_t b = 0; b < w; ++b) e[b] = x[i * inner + b] - shift[b];
    exp(w, e, e);
    for (int64_t b = 0; b < w; ++b) s[b] += e[b];
  }
  if (log) {
    float ls[kPiece];
    for (int64_t b = 0; b < w; ++b) ls[b] = static_cast<float>(std::log(s[b]));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t b = 0; b < w; ++b) y[i * inner + b] = x[i * inner + b] - shift[b] - ls[b];
  } else {
    float inv[kPiece];
    for (int64_t b = 0; b < w; ++b) inv[b] = static_cast<float>(1.0 / s[b]);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t b = 0; b < w; ++b) y[i * inner + b] *= inv[b];
  }
}

RNNKIT_VECTOR_CLONES void scaled_exp_row(simd::ArrayFn exp, const float* row, int64_t n, float shift, float by,
                                         float* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = row[c] - shift;
  exp(n, out, out);
  for (int64_t c = 0; c < n; ++c) out[c] *= by;
}

}  // namespace

bool have_vector_rows() { return simd::active_kernels() != nullptr; }

bool vector_map(VectorFn fn, int64_t n, const float* x, float* y) {
  const simd::Kernels* k = simd::active_kernels();
  if (k == nullptr) return false;
  array_fn(*k, fn)(n, x, y);
  return true;
}

bool exp_sum(const float* row, int64_t n, float* max, double* sum) {
  const simd::Kernels* k = simd::active_kernels();
  if (k == nullptr) return false;
  *max = row_exp_sum(k->exp, row, n, sum);
  return true;
}

bool scaled_exp(const float* row, int64_t n, float shift, float scale, float* out) {
  const simd::Kernels* k = simd::active_kernels();
  if (k == nullptr) return false;
  scaled_exp_row(k->exp, row, n, shift, scale, out);
  return true;
}

bool softmax_float(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  const simd::Kernels* k = simd::active_kernels();
  if (k == nullptr) return false;
  const simd::ArrayFn exp = k->exp;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 65536)
    for (int64_t a = 0; a < outer; ++a) softmax_row(exp, x + a * n, y + a * n, n, log);
    return true;
  }
  const int64_t blocks = (inner + kPiece - 1) / kPiece;
#pragma omp parallel for schedule(static) if (outer * n * inner > 65536)
  for (int64_t ab = 0; ab < outer * blocks; ++ab) {
    const int64_t a = ab / blocks, b0 = ab % blocks * kPiece;
    softmax_columns(exp, x + a * n * inner + b0, y + a * n * inner + b0, n, inner, std::min(kPiece, inner - b0),
                    log);
  }
  return true;
}

}  // namespace rnnkit::native
