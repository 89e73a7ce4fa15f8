// Tests of the raw-pointer recurrent kernels (src/kernels/cpu/rnn.h) against a
// naive reference written here: one sequence at a time, one step at a time, plain
// loops in double. Forward outputs are compared with the reference; gradients of
// the double kernel with central finite differences of the reference's scalar loss
// sum(y*R1) + sum(h_n*R2) + sum(c_n*R3); the float kernel with the double one,
// under every instruction set this CPU has (AVX-512, AVX2, scalar), so the
// vectorised paths (rnn_simd.h), the persistent small-batch forward included, are
// checked against the same reference. The vectorised activations are checked
// against the C library over the whole float range.
// Every configuration is random and its seed is printed on failure.
#include <gtest/gtest.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/cpu/bfloat16.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rnn.h"
#include "kernels/cpu/rnn_simd.h"
#include "kernels/cpu/rnn_tuning.h"
#include "rnnkit/error.h"
#include "rnnkit/threading.h"

namespace {

using rnnkit::kernels::cpu::CellType;
using rnnkit::kernels::cpu::RnnGrads;
using rnnkit::kernels::cpu::RnnLayerDims;
using rnnkit::kernels::cpu::RnnWeights;
namespace k = rnnkit::kernels::cpu;
namespace simd = rnnkit::kernels::cpu::simd;

// The instruction sets this CPU runs, widest first; scalar always.
std::vector<simd::Isa> available_isas() {
  std::vector<simd::Isa> out;
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2, simd::Isa::kScalar})
    if (isa == simd::Isa::kScalar || simd::kernels(isa) != nullptr) out.push_back(isa);
  return out;
}

// Runs the float kernels on one instruction set while in scope.
class IsaScope {
 public:
  explicit IsaScope(simd::Isa isa) : saved_(simd::active_isa()) { simd::set_active_isa(isa); }
  ~IsaScope() { simd::set_active_isa(saved_); }

 private:
  simd::Isa saved_;
};

class ThreadsScope {
 public:
  explicit ThreadsScope(int n) : saved_(rnnkit::get_num_threads()) { rnnkit::set_num_threads(n); }
  ~ThreadsScope() { rnnkit::set_num_threads(saved_); }

 private:
  int saved_;
};

// Sets the W_hh size from which batches that fill a vector take the
// rows-in-lanes path (k::tuning::set_lanes_min_weights) while in scope.
class LanesThresholdScope {
 public:
  explicit LanesThresholdScope(int64_t floats) { k::tuning::set_lanes_min_weights(floats); }
  ~LanesThresholdScope() { k::tuning::set_lanes_min_weights(-1); }
};

// Uniform floats in [-1, 1) from a seeded generator: one at a time, or filling
// a whole vector.
class UniformFloats {
 public:
  explicit UniformFloats(uint64_t seed) : rng_(seed) {}
  float operator()() { return uni_(rng_); }
  void fill(std::vector<float>& v) {
    for (float& e : v) e = uni_(rng_);
  }

 private:
  std::mt19937_64 rng_;
  std::uniform_real_distribution<float> uni_{-1.0f, 1.0f};
};

// c (M rows of ldc) against beta * c0 + A W in double, A [M, K] with row
// stride lda and W's (k, j) element w_at(k, j); columns from N to ldc must hold
// c0's values.
template <class WAt>
void expect_product(const std::vector<float>& c, const std::vector<float>& c0, double beta, int64_t M, int64_t N,
                    int64_t K, int64_t ldc, const float* a, int64_t lda, WAt w_at) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t at = static_cast<size_t>(i * ldc + j);
      if (j >= N) {
        ASSERT_EQ(c[at], c0[at]) << "column " << j << " beyond N was written";
        continue;
      }
      double sum = beta * c0[at];
      for (int64_t q = 0; q < K; ++q) sum += double(a[i * lda + q]) * w_at(q, j);
      ASSERT_NEAR(c[at], sum, 2e-6 * (K + 1)) << "row " << i << " column " << j;
    }
}

// Sets the W_hh size from which the small-batch backward reads W_hh in
// prefetched row chunks (k::tuning::set_streamed_grad_min_bytes) while in scope.
class StreamedGradScope {
 public:
  explicit StreamedGradScope(int64_t bytes) { k::tuning::set_streamed_grad_min_bytes(bytes); }
  ~StreamedGradScope() { k::tuning::set_streamed_grad_min_bytes(-1); }
};

// Sets the slice of W_hh from which the small-batch forward splits its groups
// into parts that other threads may run (k::tuning::set_split_min_bytes) while in
// scope.
class SplitScope {
 public:
  explicit SplitScope(int64_t bytes) { k::tuning::set_split_min_bytes(bytes); }
  ~SplitScope() { k::tuning::set_split_min_bytes(-1); }
};

// Sets how far ahead the small-batch forward's product and backward's column
// walk request their weights (k::tuning::set_small_batch_prefetch; 0: not at
// all) while in scope.
class PrefetchScope {
 public:
  explicit PrefetchScope(int64_t bytes) { k::tuning::set_small_batch_prefetch(bytes); }
  ~PrefetchScope() { k::tuning::set_small_batch_prefetch(-1); }
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kSentinel = 777.0;  // fills columns past the row width; must survive

const char* cell_name(CellType cell) {
  switch (cell) {
    case CellType::RNN_TANH: return "RNN_TANH";
    case CellType::RNN_RELU: return "RNN_RELU";
    case CellType::LSTM: return "LSTM";
    case CellType::GRU: return "GRU";
  }
  return "?";
}

struct Config {
  uint64_t seed = 0;
  CellType cell = CellType::LSTM;
  int64_t I = 1, H = 1, P = 0, N = 1, T = 1;
  std::vector<int64_t> batch_sizes;  // [T]
  bool reverse = false, has_bias = true;
  bool use_h0 = true, use_c0 = true;          // false: the kernel gets null (zeros)
  bool use_dy = true, use_dh_n = true, use_dc_n = true;  // false: the kernel gets null
  bool accumulate = false;  // prefilled dW and dx with beta_dx = 1, else dW = 0, beta_dx = 0
  bool separate_scratch = false;  // RnnLayerDims::separate_scratch
  bool overwrite = false;         // RnnLayerDims::overwrite_forward_workspace
  int64_t ldx_pad = 0, ldy_pad = 0, lddy_pad = 0, lddx_pad = 0;
  double weight_scale = 0.6;

  int64_t G() const { return k::gate_count(cell); }
  int64_t Hout() const { return P > 0 ? P : H; }
  int64_t rows() const {
    int64_t r = 0;
    for (int64_t b : batch_sizes) r += b;
    return r;
  }
  bool is_lstm() const { return cell == CellType::LSTM; }
  RnnLayerDims dims() const {
    RnnLayerDims d;
    d.cell = cell;
    d.input_size = I;
    d.hidden_size = H;
    d.proj_size = P;
    d.batch = N;
    d.steps = T;
    d.batch_sizes = batch_sizes.data();
    d.reverse = reverse;
    d.has_bias = has_bias;
    d.separate_scratch = separate_scratch;
    d.overwrite_forward_workspace = overwrite;
    return d;
  }
  std::string describe() const {
    std::ostringstream os;
    os << "seed=" << seed << " cell=" << cell_name(cell) << " I=" << I << " H=" << H << " P=" << P
       << " N=" << N << " T=" << T << " batch_sizes=[";
    for (size_t t = 0; t < batch_sizes.size(); ++t) os << (t ? "," : "") << batch_sizes[t];
    os << "] reverse=" << reverse << " bias=" << has_bias << " h0=" << use_h0 << " c0=" << use_c0
       << " dy=" << use_dy << " dh_n=" << use_dh_n << " dc_n=" << use_dc_n
       << " accumulate=" << accumulate << " separate_scratch=" << separate_scratch
       << " overwrite=" << overwrite
       << " pads(x,y,dy,dx)=" << ldx_pad << "," << ldy_pad << ","
       << lddy_pad << "," << lddx_pad;
    return os.str();
  }
};

// Batch sizes from sequence lengths sorted longest first: batch_sizes[t] is the
// number of sequences longer than t.
std::vector<int64_t> batch_sizes_from_lengths(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> bs(static_cast<size_t>(lengths[0]), 0);
  for (int64_t len : lengths)
    for (int64_t t = 0; t < len; ++t) ++bs[static_cast<size_t>(t)];
  return bs;
}

Config random_config(CellType cell, uint64_t seed, int64_t max_size = 6) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Config c;
  c.seed = seed;
  c.cell = cell;
  c.I = uni(1, max_size - 1);
  c.H = uni(1, max_size);
  c.P = (cell == CellType::LSTM && c.H >= 2 && uni(0, 1)) ? uni(1, c.H - 1) : 0;
  c.N = uni(1, 5);
  c.T = uni(1, 6);
  std::vector<int64_t> lengths(static_cast<size_t>(c.N), c.T);
  if (uni(0, 2) > 0) {  // packed: random lengths, the longest being T
    for (size_t b = 1; b < lengths.size(); ++b) lengths[b] = uni(1, c.T);
    std::sort(lengths.begin(), lengths.end(), std::greater<int64_t>());
  }
  c.batch_sizes = batch_sizes_from_lengths(lengths);
  c.reverse = uni(0, 1);
  c.has_bias = uni(0, 3) > 0;
  c.use_h0 = uni(0, 1);
  c.use_c0 = uni(0, 1);
  c.use_dy = uni(0, 4) > 0;
  c.use_dh_n = uni(0, 2) > 0;
  c.use_dc_n = uni(0, 2) > 0;
  if (!c.use_dh_n && !(c.use_dc_n && cell == CellType::LSTM)) c.use_dy = true;
  c.accumulate = uni(0, 1);
  c.ldx_pad = uni(0, 2);
  c.ldy_pad = uni(0, 3);
  c.lddy_pad = uni(0, 2);
  c.lddx_pad = uni(0, 2);
  c.separate_scratch = uni(0, 2) == 0;
  c.overwrite = uni(0, 2) == 0;
  return c;
}

// Everything the loss depends on, dense, in double; plus the loss weights and the
// prefills of accumulated gradients.
struct Problem {
  std::vector<double> x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr;
  std::vector<double> r_y, r_hn, r_cn;  // R1 [rows, Hout], R2 [N, Hout], R3 [N, H]
  std::vector<double> dx0, dw_ih0, dw_hh0, db_ih0, db_hh0, dw_hr0;
};

Problem random_problem(const Config& c) {
  std::mt19937_64 rng(c.seed * 7919 + 17);
  auto fill = [&](size_t n, double scale) {
    std::uniform_real_distribution<double> dist(-scale, scale);
    std::vector<double> v(n);
    for (double& e : v) e = dist(rng);
    return v;
  };
  const size_t rows = c.rows(), I = c.I, H = c.H, Hout = c.Hout(), N = c.N, P = c.P;
  const size_t GH = c.G() * H;
  const double ws = c.weight_scale;
  Problem p;
  p.x = fill(rows * I, 1.0);
  p.h0 = c.use_h0 ? fill(N * Hout, 1.0) : std::vector<double>(N * Hout, 0.0);
  p.c0 = c.use_c0 ? fill(N * H, 1.0) : std::vector<double>(N * H, 0.0);
  p.w_ih = fill(GH * I, ws);
  p.w_hh = fill(GH * Hout, ws);
  p.b_ih = fill(GH, ws);
  p.b_hh = fill(GH, ws);
  p.w_hr = fill(P * H, ws);
  p.r_y = c.use_dy ? fill(rows * Hout, 1.0) : std::vector<double>(rows * Hout, 0.0);
  p.r_hn = c.use_dh_n ? fill(N * Hout, 1.0) : std::vector<double>(N * Hout, 0.0);
  p.r_cn = (c.use_dc_n && c.is_lstm()) ? fill(N * H, 1.0) : std::vector<double>(N * H, 0.0);
  const double pre = c.accumulate ? 0.5 : 0.0;
  p.dx0 = fill(rows * I, pre);
  p.dw_ih0 = fill(GH * I, pre);
  p.dw_hh0 = fill(GH * Hout, pre);
  p.db_ih0 = fill(GH, pre);
  p.db_hh0 = fill(GH, pre);
  p.dw_hr0 = fill(P * H, pre);
  return p;
}

// ---------------------------------------------------------------------------
// Reference: one sequence at a time, straight from the PyTorch equations.

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

struct ReferenceOutputs {
  std::vector<double> y, h_n, c_n;  // [rows, Hout], [N, Hout], [N, H]
};

ReferenceOutputs reference_forward(const Config& c, const Problem& p) {
  const int64_t I = c.I, H = c.H, Hout = c.Hout(), G = c.G(), N = c.N, T = c.T;
  std::vector<int64_t> off(static_cast<size_t>(T), 0);
  for (int64_t t = 1; t < T; ++t) off[t] = off[t - 1] + c.batch_sizes[t - 1];
  ReferenceOutputs out;
  out.y.assign(c.rows() * Hout, 0.0);
  out.h_n.assign(N * Hout, 0.0);
  out.c_n.assign(N * H, 0.0);
  std::vector<double> gi(G * H), gh(G * H), h(Hout), cell(H), m(H);
  for (int64_t b = 0; b < N; ++b) {
    int64_t len = 0;
    while (len < T && c.batch_sizes[len] > b) ++len;
    for (int64_t j = 0; j < Hout; ++j) h[j] = p.h0[b * Hout + j];
    for (int64_t j = 0; j < H; ++j) cell[j] = p.c0[b * H + j];
    for (int64_t step = 0; step < len; ++step) {
      const int64_t t = c.reverse ? len - 1 - step : step;
      const double* x = &p.x[(off[t] + b) * I];
      for (int64_t r = 0; r < G * H; ++r) {
        double si = c.has_bias ? p.b_ih[r] : 0.0;
        for (int64_t i = 0; i < I; ++i) si += p.w_ih[r * I + i] * x[i];
        double sh = c.has_bias ? p.b_hh[r] : 0.0;
        for (int64_t j = 0; j < Hout; ++j) sh += p.w_hh[r * Hout + j] * h[j];
        gi[r] = si;
        gh[r] = sh;
      }
      switch (c.cell) {
        case CellType::RNN_TANH:
          for (int64_t j = 0; j < H; ++j) h[j] = std::tanh(gi[j] + gh[j]);
          break;
        case CellType::RNN_RELU:
          for (int64_t j = 0; j < H; ++j) h[j] = std::max(0.0, gi[j] + gh[j]);
          break;
        case CellType::LSTM:
          for (int64_t j = 0; j < H; ++j) {
            const double in = sigmoid(gi[j] + gh[j]);
            const double forget = sigmoid(gi[H + j] + gh[H + j]);
            const double g = std::tanh(gi[2 * H + j] + gh[2 * H + j]);
            const double o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
            cell[j] = forget * cell[j] + in * g;
            m[j] = o * std::tanh(cell[j]);
          }
          if (c.P > 0) {
            for (int64_t q = 0; q < c.P; ++q) {
              double s = 0.0;
              for (int64_t j = 0; j < H; ++j) s += p.w_hr[q * H + j] * m[j];
              h[q] = s;
            }
          } else {
            h = m;
          }
          break;
        case CellType::GRU:
          for (int64_t j = 0; j < H; ++j) {
            const double r = sigmoid(gi[j] + gh[j]);
            const double z = sigmoid(gi[H + j] + gh[H + j]);
            const double n = std::tanh(gi[2 * H + j] + r * gh[2 * H + j]);
            h[j] = (1.0 - z) * n + z * h[j];
          }
          break;
      }
      for (int64_t j = 0; j < Hout; ++j) out.y[(off[t] + b) * Hout + j] = h[j];
    }
    for (int64_t j = 0; j < Hout; ++j) out.h_n[b * Hout + j] = h[j];
    for (int64_t j = 0; j < H; ++j) out.c_n[b * H + j] = cell[j];
  }
  if (!c.is_lstm()) std::fill(out.c_n.begin(), out.c_n.end(), 0.0);
  return out;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double reference_loss(const Config& c, const Problem& p) {
  const ReferenceOutputs o = reference_forward(c, p);
  return dot(o.y, p.r_y) + dot(o.h_n, p.r_hn) + dot(o.c_n, p.r_cn);
}

// ---------------------------------------------------------------------------
// Kernel runner: strided, NaN-poisoned buffers around the real data.

struct KernelOutputs {
  std::vector<double> y, h_n, c_n;                      // training forward
  std::vector<double> y_inf, h_n_inf, c_n_inf;          // inference forward
  std::vector<double> y_inf_packed;  // inference with rnn_pack_weights (float), else y_inf
  // Inference with W_hh and W_ih packed by the caller (float, where the forward
  // takes packed W_ih: rnn_packed_input_weights_size > 0), else y_inf_packed;
  // with its h_n and c_n.
  std::vector<double> y_inf_packed_ih, h_n_inf_packed_ih, c_n_inf_packed_ih;
  std::vector<double> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr;  // minus prefills
  // Second backward with dx, dh0, dc0, dW_ih and dB_ih not requested.
  std::vector<double> dw_hh_partial, db_hh_partial, dw_hr_partial;
};

template <class T>
std::vector<T> to(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// [rows, width] dense -> row stride ld, padding columns set to pad.
template <class T>
std::vector<T> strided(const std::vector<double>& dense, int64_t rows, int64_t width, int64_t ld,
                       double pad) {
  std::vector<T> out(static_cast<size_t>(rows * ld), static_cast<T>(pad));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < width; ++j) out[r * ld + j] = static_cast<T>(dense[r * width + j]);
  return out;
}

// Reads back [rows, width] from row stride ld; records whether the padding kept
// the sentinel.
template <class T>
std::vector<double> unstride(const std::vector<T>& buf, int64_t rows, int64_t width, int64_t ld,
                             const char* what) {
  std::vector<double> out(static_cast<size_t>(rows * width));
  int64_t touched = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < width; ++j) out[r * width + j] = buf[r * ld + j];
    for (int64_t j = width; j < ld; ++j) touched += buf[r * ld + j] != static_cast<T>(kSentinel);
  }
  EXPECT_EQ(touched, 0) << what << ": columns past the row width were written";
  return out;
}

template <class T>
std::vector<double> minus(const std::vector<T>& a, const std::vector<double>& b) {
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = static_cast<double>(a[i]) - b[i];
  return out;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

void expect_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                  double rtol, double atol);

// The kernels' weights over these buffers, the biases and W_hr where c has them.
template <class T>
RnnWeights<T> weights_of(const Config& c, const std::vector<T>& w_ih, const std::vector<T>& w_hh,
                         const std::vector<T>& b_ih, const std::vector<T>& b_hh, const std::vector<T>& w_hr) {
  RnnWeights<T> w;
  w.w_ih = w_ih.data();
  w.w_hh = w_hh.data();
  w.b_ih = c.has_bias ? b_ih.data() : nullptr;
  w.b_hh = c.has_bias ? b_hh.data() : nullptr;
  w.w_hr = c.P > 0 ? w_hr.data() : nullptr;
  return w;
}

template <class T>
KernelOutputs run_kernel(const Config& c, const Problem& p) {
  const RnnLayerDims d = c.dims();
  const int64_t rows = c.rows(), I = c.I, H = c.H, Hout = c.Hout(), N = c.N;
  const int64_t ldx = I + c.ldx_pad, ldy = Hout + c.ldy_pad, lddy = Hout + c.lddy_pad,
                lddx = I + c.lddx_pad;
  const bool lstm = c.is_lstm();

  const std::vector<T> w_ih = to<T>(p.w_ih), w_hh = to<T>(p.w_hh), b_ih = to<T>(p.b_ih),
                       b_hh = to<T>(p.b_hh), w_hr = to<T>(p.w_hr);
  RnnWeights<T> w = weights_of(c, w_ih, w_hh, b_ih, b_hh, w_hr);

  const std::vector<T> x = strided<T>(p.x, rows, I, ldx, kNaN);
  const std::vector<T> h0 = to<T>(p.h0), c0 = to<T>(p.c0);
  const T* h0p = c.use_h0 ? h0.data() : nullptr;
  const T* c0p = (lstm && c.use_c0) ? c0.data() : nullptr;

  KernelOutputs out;
  std::vector<T> y(static_cast<size_t>(rows * ldy), static_cast<T>(kSentinel));
  std::vector<T> h_n(N * Hout, static_cast<T>(kNaN)), c_n(N * H, static_cast<T>(kNaN));
  std::vector<T> ws(k::rnn_forward_workspace_size(d, true), static_cast<T>(kNaN));
  std::vector<T> scratch(k::rnn_forward_scratch_size(d), static_cast<T>(kNaN));
  // The training forward, through the overload c.separate_scratch asks for.
  auto train_forward = [&] {
    if (c.separate_scratch)
      k::rnn_forward<T>(d, w, x.data(), ldx, h0p, c0p, y.data(), ldy, h_n.data(),
                        lstm ? c_n.data() : nullptr, ws.data(), true, scratch.data());
    else
      k::rnn_forward<T>(d, w, x.data(), ldx, h0p, c0p, y.data(), ldy, h_n.data(),
                        lstm ? c_n.data() : nullptr, ws.data(), true);
  };
  train_forward();
  if constexpr (std::is_same_v<T, float>) {
    // With W_hh packed by the caller a separate-scratch training forward needs
    // no scratch, and writes what it writes packing for itself, bit for bit.
    std::vector<float> packed(k::rnn_packed_weights_size(d));
    if (c.separate_scratch && !packed.empty() && k::rnn_forward_takes_packed(d)) {
      k::rnn_pack_weights(d, w_hh.data(), packed.data());
      RnnWeights<float> wp = w;
      wp.w_hh_packed = packed.data();
      std::vector<float> y3(y.size(), static_cast<float>(kSentinel)), h_n3(h_n.size(), static_cast<float>(kNaN)),
          c_n3(c_n.size(), static_cast<float>(kNaN)), ws3(ws.size(), static_cast<float>(kNaN));
      // (The workspaces are not compared: each starts at its own 64-byte boundary.)
      k::rnn_forward<float>(d, wp, x.data(), ldx, h0p, c0p, y3.data(), ldy, h_n3.data(),
                            lstm ? c_n3.data() : nullptr, ws3.data(), true, nullptr);
      const auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same_bits(y3, y) && same_bits(h_n3, h_n) && same_bits(c_n3, c_n))
          << "training forward with caller-packed W_hh and no scratch";
    }
  }
  out.y = unstride(y, rows, Hout, ldy, "y");
  out.h_n = widen(h_n);
  out.c_n = lstm ? widen(c_n) : std::vector<double>(N * H, 0.0);

  {
    std::vector<T> y2(static_cast<size_t>(rows * ldy), static_cast<T>(kSentinel));
    std::vector<T> h_n2(N * Hout, static_cast<T>(kNaN)), c_n2(N * H, static_cast<T>(kNaN));
    std::vector<T> ws2(k::rnn_forward_workspace_size(d, false), static_cast<T>(kNaN));
    std::fill(scratch.begin(), scratch.end(), static_cast<T>(kNaN));
    // An inference forward with weights wp into freshly poisoned y2, h_n2, c_n2 and ws2.
    const auto infer = [&](const RnnWeights<T>& wp) {
      std::fill(y2.begin(), y2.end(), static_cast<T>(kSentinel));
      std::fill(h_n2.begin(), h_n2.end(), static_cast<T>(kNaN));
      std::fill(c_n2.begin(), c_n2.end(), static_cast<T>(kNaN));
      std::fill(ws2.begin(), ws2.end(), static_cast<T>(kNaN));
      k::rnn_forward<T>(d, wp, x.data(), ldx, h0p, c0p, y2.data(), ldy, h_n2.data(), lstm ? c_n2.data() : nullptr,
                        ws2.data(), false, scratch.data());
    };
    infer(w);
    out.y_inf = unstride(y2, rows, Hout, ldy, "y (inference)");
    out.h_n_inf = widen(h_n2);
    out.c_n_inf = lstm ? widen(c_n2) : std::vector<double>(N * H, 0.0);
    out.y_inf_packed = out.y_inf;
    if constexpr (std::is_same_v<T, float>) {
      // The same inference with W_hh (and, where the forward takes it, W_hr)
      // packed by the caller.
      std::vector<float> packed(k::rnn_packed_weights_size(d), static_cast<float>(kNaN));
      std::vector<float> packed_hr(k::rnn_packed_projection_weights_size(d), static_cast<float>(kNaN));
      if (!packed.empty()) {
        k::rnn_pack_weights(d, w_hh.data(), packed.data());
        RnnWeights<float> wp = w;
        wp.w_hh_packed = packed.data();
        if (!packed_hr.empty()) {
          k::rnn_pack_projection_weights(d, w_hr.data(), packed_hr.data());
          wp.w_hr_packed = packed_hr.data();
        }
        infer(wp);
        out.y_inf_packed = unstride(y2, rows, Hout, ldy, "y (inference, packed weights)");
      }
    }
    out.y_inf_packed_ih = out.y_inf_packed;
    out.h_n_inf_packed_ih = out.h_n_inf;
    out.c_n_inf_packed_ih = out.c_n_inf;
    if constexpr (std::is_same_v<T, float>) {
      // The same inference with W_ih packed by the caller too.
      std::vector<float> packed_ih(k::rnn_packed_input_weights_size(d), static_cast<float>(kNaN));
      std::vector<float> packed(k::rnn_packed_weights_size(d), static_cast<float>(kNaN));
      if (!packed_ih.empty()) {
        k::rnn_pack_input_weights(d, w_ih.data(), packed_ih.data());
        k::rnn_pack_weights(d, w_hh.data(), packed.data());
        RnnWeights<float> wp = w;
        wp.w_hh_packed = packed.data();
        wp.w_ih_packed = packed_ih.data();
        infer(wp);
        out.y_inf_packed_ih = unstride(y2, rows, Hout, ldy, "y (inference, packed W_ih)");
        out.h_n_inf_packed_ih = widen(h_n2);
        out.c_n_inf_packed_ih = lstm ? widen(c_n2) : std::vector<double>(N * H, 0.0);
      }
    }
  }

  const std::vector<T> dy = strided<T>(p.r_y, rows, Hout, lddy, kNaN);
  const std::vector<T> dh_n = to<T>(p.r_hn), dc_n = to<T>(p.r_cn);
  const T* dyp = c.use_dy ? dy.data() : nullptr;
  const T* dh_np = c.use_dh_n ? dh_n.data() : nullptr;
  const T* dc_np = (lstm && c.use_dc_n) ? dc_n.data() : nullptr;

  // Prefills of the accumulated outputs, as the kernel sees them (rounded to T).
  auto prefill = [&](const std::vector<double>& v) {
    return c.accumulate ? widen(to<T>(v)) : std::vector<double>(v.size(), 0.0);
  };
  const std::vector<double> dx0 = prefill(p.dx0), dw_ih0 = prefill(p.dw_ih0),
                            dw_hh0 = prefill(p.dw_hh0), db_ih0 = prefill(p.db_ih0),
                            db_hh0 = prefill(p.db_hh0), dw_hr0 = prefill(p.dw_hr0);
  std::vector<T> dx = strided<T>(c.accumulate ? dx0 : std::vector<double>(rows * I, kNaN), rows,
                                 I, lddx, kSentinel);
  std::vector<T> dh0(N * Hout, static_cast<T>(kNaN)), dc0(N * H, static_cast<T>(kNaN));
  std::vector<T> dw_ih = to<T>(dw_ih0), dw_hh = to<T>(dw_hh0), db_ih = to<T>(db_ih0),
                 db_hh = to<T>(db_hh0), dw_hr = to<T>(dw_hr0);
  // Every parameter gradient (dw_hr with a projection) into these buffers.
  auto all_grads = [&](std::vector<T>& w_ih, std::vector<T>& w_hh, std::vector<T>& b_ih, std::vector<T>& b_hh,
                       std::vector<T>& w_hr) {
    RnnGrads<T> g;
    g.dw_ih = w_ih.data();
    g.dw_hh = w_hh.data();
    g.db_ih = b_ih.data();
    g.db_hh = b_hh.data();
    g.dw_hr = c.P > 0 ? w_hr.data() : nullptr;
    return g;
  };
  const RnnGrads<T> dw = all_grads(dw_ih, dw_hh, db_ih, db_hh, dw_hr);
  std::vector<T> bws(k::rnn_backward_workspace_size(d), static_cast<T>(kNaN));
  k::rnn_backward<T>(d, w, x.data(), ldx, h0p, c0p, y.data(), ldy, ws.data(), dyp, lddy, dh_np,
                     dc_np, dx.data(), lddx, c.accumulate ? T(1) : T(0), dh0.data(),
                     lstm ? dc0.data() : nullptr, dw, bws.data());
  const std::vector<double> dx_dense = unstride(dx, rows, I, lddx, "dx");
  out.dx = minus(dx_dense, dx0);
  out.dh0 = widen(dh0);
  out.dc0 = lstm ? widen(dc0) : std::vector<double>(N * H, 0.0);
  out.dw_ih = minus(dw_ih, dw_ih0);
  out.dw_hh = minus(dw_hh, dw_hh0);
  out.db_ih = minus(db_ih, db_ih0);
  out.db_hh = minus(db_hh, db_hh0);
  out.dw_hr = minus(dw_hr, dw_hr0);
  // Same backward again from the same forward workspace (as a second backward
  // through a retained graph), with most outputs not requested; what is
  // requested must not change. rnn_backward may use the forward-only part of the
  // workspace as scratch, never what the backward reads, unless told it may
  // overwrite the workspace: then the forward runs again first.
  if (c.overwrite) {
    std::fill(ws.begin(), ws.end(), static_cast<T>(kNaN));
    train_forward();
  }
  std::vector<T> dw_hh2(dw_hh.size(), T(0)), db_hh2(db_hh.size(), T(0)), dw_hr2(dw_hr.size(), T(0));
  RnnGrads<T> dw2;
  dw2.dw_hh = dw_hh2.data();
  dw2.db_hh = db_hh2.data();
  dw2.dw_hr = c.P > 0 ? dw_hr2.data() : nullptr;
  std::fill(bws.begin(), bws.end(), static_cast<T>(kNaN));
  k::rnn_backward<T>(d, w, x.data(), ldx, h0p, c0p, y.data(), ldy, ws.data(), dyp, lddy, dh_np,
                     dc_np, nullptr, lddx, T(0), nullptr, nullptr, dw2, bws.data());
  out.dw_hh_partial = widen(dw_hh2);
  out.db_hh_partial = widen(db_hh2);
  out.dw_hr_partial = widen(dw_hr2);
  // The gradients written instead of accumulated (RnnGrads::overwrite), into
  // buffers full of NaN: the values accumulating into zeros gave above, to
  // float rounding (sgemm with beta = 0 may sum in another order than with
  // beta = 1: last-bit differences).
  if (!c.accumulate) {
    if (c.overwrite) {
      std::fill(ws.begin(), ws.end(), static_cast<T>(kNaN));
      train_forward();
    }
    std::vector<T> dw_ih3(dw_ih.size(), static_cast<T>(kNaN)), dw_hh3(dw_hh.size(), static_cast<T>(kNaN)),
        db_ih3(db_ih.size(), static_cast<T>(kNaN)), db_hh3(db_hh.size(), static_cast<T>(kNaN)),
        dw_hr3(dw_hr.size(), static_cast<T>(kNaN));
    RnnGrads<T> dw3 = all_grads(dw_ih3, dw_hh3, db_ih3, db_hh3, dw_hr3);
    dw3.overwrite = true;
    std::fill(bws.begin(), bws.end(), static_cast<T>(kNaN));
    k::rnn_backward<T>(d, w, x.data(), ldx, h0p, c0p, y.data(), ldy, ws.data(), dyp, lddy, dh_np,
                       dc_np, nullptr, lddx, T(0), nullptr, nullptr, dw3, bws.data());
    const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
    expect_close("dw_ih written (overwrite)", widen(dw_ih3), out.dw_ih, tol, tol);
    expect_close("dw_hh written (overwrite)", widen(dw_hh3), out.dw_hh, tol, tol);
    if (c.has_bias) {
      expect_close("db_ih written (overwrite)", widen(db_ih3), out.db_ih, tol, tol);
      expect_close("db_hh written (overwrite)", widen(db_hh3), out.db_hh, tol, tol);
    }
    if (c.P > 0) expect_close("dw_hr written (overwrite)", widen(dw_hr3), out.dw_hr, tol, tol);
  }
  return out;
}

// run_kernel<float> on `threads` threads.
KernelOutputs run_float_kernel_on(int threads, const Config& c, const Problem& p) {
  ThreadsScope scope(threads);
  return run_kernel<float>(c, p);
}

// Every output of two runs (forwards, gradients, the second backward's) the
// same bits.
void expect_same_bits(const KernelOutputs& a, const KernelOutputs& b) {
  const std::pair<const char*, std::vector<double> KernelOutputs::*> fields[] = {
      {"y", &KernelOutputs::y},
      {"h_n", &KernelOutputs::h_n},
      {"c_n", &KernelOutputs::c_n},
      {"y_inf", &KernelOutputs::y_inf},
      {"h_n_inf", &KernelOutputs::h_n_inf},
      {"c_n_inf", &KernelOutputs::c_n_inf},
      {"y_inf_packed", &KernelOutputs::y_inf_packed},
      {"y_inf_packed_ih", &KernelOutputs::y_inf_packed_ih},
      {"h_n_inf_packed_ih", &KernelOutputs::h_n_inf_packed_ih},
      {"c_n_inf_packed_ih", &KernelOutputs::c_n_inf_packed_ih},
      {"dx", &KernelOutputs::dx},
      {"dh0", &KernelOutputs::dh0},
      {"dc0", &KernelOutputs::dc0},
      {"dw_ih", &KernelOutputs::dw_ih},
      {"dw_hh", &KernelOutputs::dw_hh},
      {"db_ih", &KernelOutputs::db_ih},
      {"db_hh", &KernelOutputs::db_hh},
      {"dw_hr", &KernelOutputs::dw_hr},
      {"dw_hh_partial", &KernelOutputs::dw_hh_partial},
      {"db_hh_partial", &KernelOutputs::db_hh_partial},
      {"dw_hr_partial", &KernelOutputs::dw_hr_partial}};
  for (const auto& [name, field] : fields) EXPECT_TRUE(a.*field == b.*field) << name << " differs";
}

// The float forward of c on one thread and on `threads`: the same bits of y,
// h_n and c_n.
void expect_forward_same_on(int threads, const Config& c, const Problem& p) {
  const KernelOutputs one = run_float_kernel_on(1, c, p), more = run_float_kernel_on(threads, c, p);
  EXPECT_EQ(one.y, more.y) << threads << " threads";
  EXPECT_EQ(one.h_n, more.h_n) << threads << " threads";
  EXPECT_EQ(one.c_n, more.c_n) << threads << " threads";
  EXPECT_EQ(one.y_inf_packed_ih, more.y_inf_packed_ih) << threads << " threads, packed W_ih";
  EXPECT_EQ(one.h_n_inf_packed_ih, more.h_n_inf_packed_ih) << threads << " threads, packed W_ih";
  EXPECT_EQ(one.c_n_inf_packed_ih, more.c_n_inf_packed_ih) << threads << " threads, packed W_ih";
}

// ---------------------------------------------------------------------------
// Comparison: each element within rtol*|want| + atol*max|want| (+ a floor for
// all-zero tensors); NaN never passes.

void expect_close(const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& want, double rtol, double atol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0.0;
  for (double v : want) scale = std::max(scale, std::abs(v));
  size_t bad = 0, worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]);
    const double tol = rtol * std::abs(want[i]) + atol * scale + 1e-14;
    if (!(err <= tol)) {
      ++bad;
      const double ratio = std::isnan(err) ? std::numeric_limits<double>::infinity() : err / tol;
      if (ratio >= worst_ratio) {
        worst_ratio = ratio;
        worst = i;
      }
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements off; worst at " << worst << ": got " << got[worst] << ", want "
                     << want[worst] << " (max|want| " << scale << ")";
}

// Central differences of the reference loss w.r.t. every element of v.
std::vector<double> finite_differences(const Config& c, Problem& p, std::vector<double>& v) {
  constexpr double eps = 1e-6;
  std::vector<double> grad(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + eps;
    const double up = reference_loss(c, p);
    v[i] = saved - eps;
    const double down = reference_loss(c, p);
    v[i] = saved;
    grad[i] = (up - down) / (2 * eps);
  }
  return grad;
}

void check_float_against_double(const KernelOutputs& kf, const KernelOutputs& kd);

// The double kernels' forward on c's random problem, checked against the
// scalar reference; the problem and all kernel outputs for further checks.
std::pair<Problem, KernelOutputs> double_forward_checked(const Config& c) {
  Problem p = random_problem(c);
  const ReferenceOutputs ref = reference_forward(c, p);
  KernelOutputs kd = run_kernel<double>(c, p);
  expect_close("y", kd.y, ref.y, 1e-10, 1e-12);
  expect_close("h_n", kd.h_n, ref.h_n, 1e-10, 1e-12);
  expect_close("c_n", kd.c_n, ref.c_n, 1e-10, 1e-12);
  return {std::move(p), std::move(kd)};
}

void check_config(const Config& c) {
  SCOPED_TRACE(c.describe());
  auto checked = double_forward_checked(c);
  Problem& p = checked.first;
  const KernelOutputs& kd = checked.second;
  EXPECT_EQ(kd.y_inf, kd.y) << "inference forward differs from training forward";
  EXPECT_EQ(kd.h_n_inf, kd.h_n) << "inference h_n differs from training h_n";
  EXPECT_EQ(kd.c_n_inf, kd.c_n) << "inference c_n differs from training c_n";

  constexpr double fd_rtol = 1e-6, fd_atol = 1e-6;
  expect_close("dx", kd.dx, finite_differences(c, p, p.x), fd_rtol, fd_atol);
  expect_close("dh0", kd.dh0, finite_differences(c, p, p.h0), fd_rtol, fd_atol);
  if (c.is_lstm()) expect_close("dc0", kd.dc0, finite_differences(c, p, p.c0), fd_rtol, fd_atol);
  expect_close("dw_ih", kd.dw_ih, finite_differences(c, p, p.w_ih), fd_rtol, fd_atol);
  expect_close("dw_hh", kd.dw_hh, finite_differences(c, p, p.w_hh), fd_rtol, fd_atol);
  if (c.has_bias) {
    expect_close("db_ih", kd.db_ih, finite_differences(c, p, p.b_ih), fd_rtol, fd_atol);
    expect_close("db_hh", kd.db_hh, finite_differences(c, p, p.b_hh), fd_rtol, fd_atol);
  } else {
    expect_close("db_ih (no bias: untouched)", kd.db_ih, std::vector<double>(kd.db_ih.size()), 0, 0);
    expect_close("db_hh (no bias: untouched)", kd.db_hh, std::vector<double>(kd.db_hh.size()), 0, 0);
  }
  if (c.P > 0) expect_close("dw_hr", kd.dw_hr, finite_differences(c, p, p.w_hr), fd_rtol, fd_atol);

  expect_close("dw_hh (partial request)", kd.dw_hh_partial, kd.dw_hh, 1e-12, 1e-12);
  expect_close("db_hh (partial request)", kd.db_hh_partial, kd.db_hh, 1e-12, 1e-12);
  expect_close("dw_hr (partial request)", kd.dw_hr_partial, kd.dw_hr, 1e-12, 1e-12);

  // float kernel against the double kernel; accumulation is checked above, and
  // rounding of a float prefill would hide small gradients.
  Config cf = c;
  cf.accumulate = false;
  for (simd::Isa isa : available_isas()) {
    IsaScope scope(isa);
    SCOPED_TRACE(std::string("float kernels on ") + simd::isa_name(isa));
    check_float_against_double(run_kernel<float>(cf, p), kd);
  }
}

// The float kernel against the double one (gradients without accumulation).
void check_float_against_double(const KernelOutputs& kf, const KernelOutputs& kd) {
  EXPECT_EQ(kf.y_inf, kf.y) << "float inference forward differs from training forward";
  EXPECT_EQ(kf.y_inf_packed, kf.y_inf) << "packed weights change the float forward";
  constexpr double f_tol = 1e-4;
  expect_close("float y", kf.y, kd.y, f_tol, f_tol);
  expect_close("float h_n", kf.h_n, kd.h_n, f_tol, f_tol);
  expect_close("float c_n", kf.c_n, kd.c_n, f_tol, f_tol);
  expect_close("float y (inference)", kf.y_inf, kd.y, f_tol, f_tol);
  expect_close("float y (inference, packed W_ih)", kf.y_inf_packed_ih, kd.y, f_tol, f_tol);
  expect_close("float h_n (inference, packed W_ih)", kf.h_n_inf_packed_ih, kd.h_n, f_tol, f_tol);
  expect_close("float c_n (inference, packed W_ih)", kf.c_n_inf_packed_ih, kd.c_n, f_tol, f_tol);
  expect_close("float dx", kf.dx, kd.dx, f_tol, f_tol);
  expect_close("float dh0", kf.dh0, kd.dh0, f_tol, f_tol);
  expect_close("float dc0", kf.dc0, kd.dc0, f_tol, f_tol);
  expect_close("float dw_ih", kf.dw_ih, kd.dw_ih, f_tol, f_tol);
  expect_close("float dw_hh", kf.dw_hh, kd.dw_hh, f_tol, f_tol);
  expect_close("float db_ih", kf.db_ih, kd.db_ih, f_tol, f_tol);
  expect_close("float db_hh", kf.db_hh, kd.db_hh, f_tol, f_tol);
  expect_close("float dw_hr", kf.dw_hr, kd.dw_hr, f_tol, f_tol);
  expect_close("float dw_hh (partial request)", kf.dw_hh_partial, kd.dw_hh, f_tol, f_tol);
}

// Most configurations are tiny (fast finite differences, many corner cases); every
// fifth is somewhat wider.
void check_random_configs(CellType cell, uint64_t first_seed, int count) {
  for (int i = 0; i < count; ++i) {
    check_config(random_config(cell, first_seed + static_cast<uint64_t>(i), i % 5 == 4 ? 10 : 6));
    if (::testing::Test::HasFailure()) return;  // the first failing seed is the useful one
  }
}

TEST(RnnKernels, RnnTanhRandomConfigs) { check_random_configs(CellType::RNN_TANH, 1000, 200); }
TEST(RnnKernels, RnnReluRandomConfigs) { check_random_configs(CellType::RNN_RELU, 2000, 200); }
TEST(RnnKernels, LstmRandomConfigs) { check_random_configs(CellType::LSTM, 3000, 300); }
TEST(RnnKernels, GruRandomConfigs) { check_random_configs(CellType::GRU, 4000, 200); }

// Fixed corner cases the random draw may miss: one step, one row, proj_size
// H - 1, everything packed to a single long sequence.
TEST(RnnKernels, CornerCases) {
  for (CellType cell : {CellType::RNN_TANH, CellType::RNN_RELU, CellType::LSTM, CellType::GRU}) {
    for (bool reverse : {false, true}) {
      Config c = random_config(cell, 99 + static_cast<uint64_t>(reverse));
      c.reverse = reverse;
      c.use_dy = c.use_dh_n = c.use_dc_n = true;
      c.T = 1;
      c.N = 3;
      c.batch_sizes = {3};
      check_config(c);
      c.N = 4;
      c.T = 5;
      c.batch_sizes = batch_sizes_from_lengths({5, 1, 1, 1});
      if (cell == CellType::LSTM) {
        c.H = 4;
        c.P = 3;
      }
      check_config(c);
    }
  }
}

// ---------------------------------------------------------------------------
// Large enough that the pointwise loops run on OpenMP threads. Forward against the
// reference; gradients by one directional derivative over all inputs at once.

void check_large(Config c) {
  SCOPED_TRACE(c.describe());
  auto checked = double_forward_checked(c);
  Problem& p = checked.first;
  const KernelOutputs& kd = checked.second;

  std::mt19937_64 rng(c.seed + 5);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<std::pair<std::vector<double>*, const std::vector<double>*>> pairs = {
      {&p.x, &kd.dx}, {&p.h0, &kd.dh0}, {&p.w_ih, &kd.dw_ih}, {&p.w_hh, &kd.dw_hh}};
  if (c.is_lstm()) pairs.push_back({&p.c0, &kd.dc0});
  if (c.has_bias) {
    pairs.push_back({&p.b_ih, &kd.db_ih});
    pairs.push_back({&p.b_hh, &kd.db_hh});
  }
  if (c.P > 0) pairs.push_back({&p.w_hr, &kd.dw_hr});
  std::vector<std::vector<double>> dirs, saved;
  double predicted = 0.0;
  for (auto& [param, grad] : pairs) {
    std::vector<double> v(param->size());
    for (double& e : v) e = dist(rng);
    predicted += dot(v, *grad);
    dirs.push_back(v);
    saved.push_back(*param);
  }
  constexpr double eps = 1e-5;
  auto shifted_loss = [&](double s) {
    for (size_t i = 0; i < pairs.size(); ++i)
      for (size_t j = 0; j < saved[i].size(); ++j) (*pairs[i].first)[j] = saved[i][j] + s * dirs[i][j];
    return reference_loss(c, p);
  };
  const double measured = (shifted_loss(eps) - shifted_loss(-eps)) / (2 * eps);
  shifted_loss(0.0);
  EXPECT_NEAR(measured, predicted, 1e-6 * std::max(1.0, std::abs(predicted)));

  for (simd::Isa isa : available_isas()) {
    IsaScope scope(isa);
    SCOPED_TRACE(std::string("float kernels on ") + simd::isa_name(isa));
    const KernelOutputs kf = run_kernel<float>(c, p);
    EXPECT_EQ(kf.y_inf, kf.y) << "float inference forward differs from training forward";
    EXPECT_EQ(kf.y_inf_packed, kf.y_inf) << "packed weights change the float forward";
    expect_close("float y", kf.y, kd.y, 1e-4, 1e-4);
    expect_close("float h_n", kf.h_n, kd.h_n, 1e-4, 1e-4);
    expect_close("float c_n", kf.c_n, kd.c_n, 1e-4, 1e-4);
    expect_close("float y (inference, packed W_ih)", kf.y_inf_packed_ih, kd.y, 1e-4, 1e-4);
    expect_close("float h_n (inference, packed W_ih)", kf.h_n_inf_packed_ih, kd.h_n, 1e-4, 1e-4);
    expect_close("float c_n (inference, packed W_ih)", kf.c_n_inf_packed_ih, kd.c_n, 1e-4, 1e-4);
    expect_close("float dx", kf.dx, kd.dx, 1e-4, 1e-4);
    expect_close("float dw_ih", kf.dw_ih, kd.dw_ih, 1e-3, 1e-4);
    expect_close("float dw_hh", kf.dw_hh, kd.dw_hh, 1e-3, 1e-4);
    expect_close("float dh0", kf.dh0, kd.dh0, 1e-4, 1e-4);
    expect_close("float dc0", kf.dc0, kd.dc0, 1e-4, 1e-4);
  }
}

// H = 264 (a partial 16-unit block), 64 rows shrinking to 20 over 4 steps.
Config large_config(CellType cell, uint64_t seed, int64_t P, bool reverse) {
  Config c = random_config(cell, seed);
  c.I = 24, c.H = 264, c.P = P, c.N = 64, c.T = 4;
  c.batch_sizes = {64, 64, 50, 20};
  c.weight_scale = 0.08;
  c.reverse = reverse;
  return c;
}

TEST(RnnKernels, LargeThreadedLstmProj) { check_large(large_config(CellType::LSTM, 77, 40, true)); }
TEST(RnnKernels, LargeThreadedGru) { check_large(large_config(CellType::GRU, 78, 0, false)); }

// Two directions writing into column halves of one [rows, 2*Hout] output and
// adding into one dx, as a bidirectional layer does.
TEST(RnnKernels, BidirectionalSharesBuffers) {
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH}) {
    Config c = random_config(cell, 555);
    c.N = 3, c.T = 4;
    c.separate_scratch = false;
    c.batch_sizes = batch_sizes_from_lengths({4, 3, 1});
    SCOPED_TRACE(c.describe());
    const Problem p = random_problem(c);
    const int64_t rows = c.rows(), I = c.I, Hout = c.Hout(), H = c.H, N = c.N;
    RnnLayerDims dims[2] = {c.dims(), c.dims()};
    dims[0].reverse = false;
    dims[1].reverse = true;
    RnnWeights<double> w;
    w.w_ih = p.w_ih.data();
    w.w_hh = p.w_hh.data();
    w.b_ih = p.b_ih.data();
    w.b_hh = p.b_hh.data();
    w.w_hr = c.P > 0 ? p.w_hr.data() : nullptr;
    std::vector<double> dy(rows * 2 * Hout);  // [rows, 2*Hout]: one half per direction
    std::mt19937_64 rng(c.seed);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    for (double& e : dy) e = dist(rng);
    std::vector<double> y_both(rows * 2 * Hout, kNaN), dx_both(rows * I, kNaN);
    std::vector<double> y_one[2], dx_one[2];
    for (int dir = 0; dir < 2; ++dir) {
      std::vector<double> ws(k::rnn_forward_workspace_size(dims[dir], true), kNaN);
      std::vector<double> bws(k::rnn_backward_workspace_size(dims[dir]), kNaN);
      std::vector<double> hn(N * Hout), cn(N * H), dw_ih(p.w_ih.size()), dw_hh(p.w_hh.size());
      RnnGrads<double> dw;
      dw.dw_ih = dw_ih.data();
      dw.dw_hh = dw_hh.data();
      k::rnn_forward<double>(dims[dir], w, p.x.data(), I, p.h0.data(), p.c0.data(),
                             y_both.data() + dir * Hout, 2 * Hout, hn.data(), cn.data(), ws.data(),
                             true);
      k::rnn_backward<double>(dims[dir], w, p.x.data(), I, p.h0.data(), p.c0.data(),
                              y_both.data() + dir * Hout, 2 * Hout, ws.data(), dy.data() + dir * Hout,
                              2 * Hout, nullptr, nullptr, dx_both.data(), I, dir == 0 ? 0.0 : 1.0,
                              nullptr, nullptr, dw, bws.data());
      // The same direction alone, dense.
      std::fill(ws.begin(), ws.end(), kNaN);
      std::fill(bws.begin(), bws.end(), kNaN);
      y_one[dir].assign(rows * Hout, kNaN);
      dx_one[dir].assign(rows * I, kNaN);
      std::vector<double> dy_one(rows * Hout);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < Hout; ++j) dy_one[r * Hout + j] = dy[r * 2 * Hout + dir * Hout + j];
      k::rnn_forward<double>(dims[dir], w, p.x.data(), I, p.h0.data(), p.c0.data(),
                             y_one[dir].data(), Hout, hn.data(), cn.data(), ws.data(), true);
      k::rnn_backward<double>(dims[dir], w, p.x.data(), I, p.h0.data(), p.c0.data(),
                              y_one[dir].data(), Hout, ws.data(), dy_one.data(), Hout, nullptr,
                              nullptr, dx_one[dir].data(), I, 0.0, nullptr, nullptr, dw, bws.data());
    }
    std::vector<double> y_expect(rows * 2 * Hout), dx_expect(rows * I);
    for (int64_t r = 0; r < rows; ++r)
      for (int dir = 0; dir < 2; ++dir)
        for (int64_t j = 0; j < Hout; ++j) y_expect[r * 2 * Hout + dir * Hout + j] = y_one[dir][r * Hout + j];
    for (size_t i = 0; i < dx_expect.size(); ++i) dx_expect[i] = dx_one[0][i] + dx_one[1][i];
    expect_close("y (both directions)", y_both, y_expect, 0, 0);
    expect_close("dx (both directions)", dx_both, dx_expect, 1e-13, 1e-13);
  }
}

TEST(RnnKernels, RejectsInconsistentDims) {
  Config c = random_config(CellType::GRU, 1);
  c.N = 3, c.T = 3;
  c.batch_sizes = {3, 2, 2};
  RnnLayerDims d = c.dims();
  EXPECT_NO_THROW(k::check_rnn_dims(d));
  std::vector<int64_t> increasing = {3, 2, 3};
  d.batch_sizes = increasing.data();
  EXPECT_THROW(k::check_rnn_dims(d), rnnkit::Error);
  std::vector<int64_t> wrong_first = {2, 2, 1};
  d.batch_sizes = wrong_first.data();
  EXPECT_THROW(k::rnn_forward_workspace_size(d, true), rnnkit::Error);
  d = c.dims();
  d.proj_size = 1;  // GRU has no projection
  EXPECT_THROW(k::check_rnn_dims(d), rnnkit::Error);
  d.cell = CellType::LSTM;
  d.hidden_size = 4;
  d.proj_size = 4;  // must be below hidden_size
  EXPECT_THROW(k::check_rnn_dims(d), rnnkit::Error);
  d.proj_size = 3;
  EXPECT_NO_THROW(k::check_rnn_dims(d));
  d.hidden_size = 0;
  EXPECT_THROW(k::check_rnn_dims(d), rnnkit::Error);
}

// The backward in chunks of a few rows (normally hundreds): chunk boundaries
// inside a step's batch never happen (a chunk holds whole steps), but between
// steps of every kind of packing, both paths, both directions.
TEST(RnnKernels, BackwardInChunks) {
  struct ChunkCap {
    explicit ChunkCap(int64_t rows) { k::tuning::set_backward_chunk_rows(rows); }
    ~ChunkCap() { k::tuning::set_backward_chunk_rows(0); }
  } cap(7);
  uint64_t seed = 7000;
  for (CellType cell : {CellType::RNN_TANH, CellType::LSTM, CellType::GRU}) {
    for (int i = 0; i < 12; ++i) {
      Config c = random_config(cell, ++seed);
      if (i % 2 == 1) {  // the generic path: more than 8 sequences
        c.N = 9 + i % 3;
        std::vector<int64_t> lengths(static_cast<size_t>(c.N), c.T);
        for (size_t b = 1; b < lengths.size(); ++b) lengths[b] = 1 + (b * 5 + i) % c.T;
        std::sort(lengths.begin(), lengths.end(), std::greater<int64_t>());
        c.batch_sizes = batch_sizes_from_lengths(lengths);
      }
      check_config(c);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

// N sequences of 5 steps or fewer (lengths 5, then 1 + 3b mod 5, sorted),
// reversed for even N.
Config packed_small_batch_config(CellType cell, uint64_t seed, int64_t N, int64_t H) {
  Config c = random_config(cell, seed);
  c.I = 24, c.H = H, c.P = 0, c.N = N, c.T = 5;
  std::vector<int64_t> lengths(static_cast<size_t>(N), c.T);
  for (int64_t b = 1; b < N; ++b) lengths[b] = 1 + (b * 3) % c.T;
  std::sort(lengths.begin(), lengths.end(), std::greater<int64_t>());
  c.batch_sizes = batch_sizes_from_lengths(lengths);
  c.reverse = N % 2 == 0;
  c.weight_scale = 0.25;
  return c;
}

// Batches of up to 8, and up to 32 when the per-step product is small, take the
// persistent small-batch forward: several 16-unit blocks over two threads, a
// partial last block, packed sequences, both directions, every cell; above 8
// rows the gradients then go through the generic backward.
TEST(RnnKernels, SmallBatchPathMultiBlock) {
  ThreadsScope threads(2);
  uint64_t seed = 900;
  for (CellType cell : {CellType::RNN_TANH, CellType::RNN_RELU, CellType::LSTM, CellType::GRU}) {
    for (int64_t N : {1, 2, 3, 5, 8, 13, 32}) {
      const Config c = packed_small_batch_config(cell, ++seed, N, N % 2 ? 40 : 33);
      // bfloat16 packing exists for the small-batch path only.
      ASSERT_GT(k::rnn_packed_weights_size(c.dims(), k::PackedPrecision::kBFloat16), 0u)
          << "batch " << N << " should take the small-batch path";
      check_large(c);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

// The small-batch backward's other reading of W_hh (prefetched chunks of 32 rows,
// taken from 8 MiB of W_hh; here forced for small layers, whose G*H rows end in
// a partial chunk): the same bits as the plain walk for every cell, batch and
// thread count, and gradients that match the double reference. Batches of 13
// and 24 walk it with the AVX-512 kernels only (small_batch_backward_path).
TEST(RnnKernels, SmallBatchBackwardStreamedWeights) {
  if (simd::active_kernels() == nullptr) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
  uint64_t seed = 960;
  for (CellType cell : {CellType::RNN_TANH, CellType::RNN_RELU, CellType::LSTM, CellType::GRU}) {
    for (int64_t N : {1, 3, 4, 6, 8, 13, 24}) {
      const Config c = packed_small_batch_config(cell, ++seed, N, N % 2 ? 72 : 41);
      SCOPED_TRACE(c.describe());
      ASSERT_STREQ(k::tuning::forward_path(c.dims()), "small-batch");
      ASSERT_EQ(std::string(k::tuning::backward_path(c.dims())) == "small-batch",
                N <= 8 || simd::active_isa() == simd::Isa::kAvx512);
      const Problem p = random_problem(c);
      for (int threads : {1, 2}) {
        SCOPED_TRACE(testing::Message() << threads << " threads");
        const KernelOutputs plain = run_float_kernel_on(threads, c, p);
        const StreamedGradScope always(0);
        expect_same_bits(run_float_kernel_on(threads, c, p), plain);
      }
      const StreamedGradScope always(0);
      check_large(c);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

// The small-batch backward's column blocks of dh = dgates W_hh: whole ones (as
// many vectors as the registers allow: 8 for one batch row, 6 for four, with
// AVX-512) and narrower last ones of every width, read plainly and in
// prefetched chunks, on one and two threads, against the double reference.
// H = 296: one thread's 296 columns are 128 + 128 + 40 for one row, two
// threads' 144 and 152 are 128 + 16 and 128 + 24, or 96 + 48 and 96 + 56.
TEST(RnnKernels, SmallBatchBackwardColumnBlocks) {
  if (simd::active_kernels() == nullptr) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
  uint64_t seed = 980;
  for (CellType cell : {CellType::RNN_TANH, CellType::LSTM, CellType::GRU})
    for (int64_t N : {1, 4, 5})
      for (int threads : {1, 2})
        for (int64_t streamed_from : {int64_t{-1}, int64_t{0}}) {
          const ThreadsScope scope(threads);
          const StreamedGradScope streamed(streamed_from);
          Config c = packed_small_batch_config(cell, ++seed, N, 296);
          c.T = 3;
          c.batch_sizes.assign(3, N);
          SCOPED_TRACE(std::to_string(threads) + " threads, streamed from " + std::to_string(streamed_from));
          ASSERT_STREQ(k::tuning::forward_path(c.dims()), "small-batch");
          check_large(c);
          if (::testing::Test::HasFailure()) return;
        }
}

// The float forward gives the same bits whatever the thread count; hidden sizes
// whose last 16-unit block is partial, down to a single unit (which a thread may
// own alone).
TEST(RnnKernels, ForwardDoesNotDependOnThreadCount) {
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH})
  for (int64_t H : {70, 17, 33, 49})
    for (int64_t N : {3, 24}) {
      Config c = random_config(cell, 321 + N + H);
      c.I = 20, c.H = H, c.P = 0, c.N = N, c.T = 6;
      c.batch_sizes.assign(6, N);
      c.weight_scale = 0.2;
      SCOPED_TRACE(c.describe());
      const Problem p = random_problem(c);
      expect_forward_same_on(2, c, p);
      expect_forward_same_on(3, c, p);
    }
  // LSTMs with a projection on the small-batch path: the gates' blocks and the
  // projection's blocks of outputs shared among the threads (two groups from
  // H = 160 here), padded and packed batches.
  for (int64_t H : {70, 33, 160, 300})
    for (int64_t P : {1, 13, 31})
      for (int64_t N : {1, 3, 8}) {
        Config c = random_config(CellType::LSTM, 777 + N + H + P);
        c.I = 20, c.H = H, c.P = P, c.N = N, c.T = 6;
        c.batch_sizes = N == 3 ? batch_sizes_from_lengths({6, 4, 1}) : std::vector<int64_t>(6, N);
        c.weight_scale = 0.2;
        SCOPED_TRACE(c.describe());
        ASSERT_STREQ(k::tuning::forward_path(c.dims()), simd::active_kernels() ? "small-batch" : "gemm");
        const Problem p = random_problem(c);
        expect_forward_same_on(2, c, p);
        expect_forward_same_on(3, c, p);
      }
}

// Short sequences of large layers take the input projection by oneDNN's brgemm
// matmul (gemm.h, prefer_this_thread_matmul) where oneDNN has it: results that
// match the double reference, and the same bits on 1, 2 and 3 threads (shares
// of 512, 256 and 160-176 units, and a partial last block with H = 520).
TEST(RnnKernels, SmallBatchMatmulProjection) {
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH})
    for (int64_t H : {512, 520}) {
      Config c = random_config(cell, 610 + H);
      c.I = 512, c.H = H, c.P = 0, c.N = 1, c.T = 16;
      c.batch_sizes.assign(16, 1);
      c.weight_scale = 0.04;
      ASSERT_TRUE(k::prefer_this_thread_matmul(c.N * c.T, c.H, c.I)) << c.describe();
      SCOPED_TRACE(c.describe());
      check_large(c);
      const Problem p = random_problem(c);
      expect_forward_same_on(2, c, p);
      expect_forward_same_on(3, c, p);
      if (::testing::Test::HasFailure()) return;
    }
}

void check_packed_input_weights(bool takes);

// W_ih packed by the caller (rnn_pack_input_weights): where the forward takes
// it (the small-batch LSTM and GRU, vector kernels: AVX-512 with all gates a
// pass, AVX2 a few gates a pass over gate-major weights), the inference
// forward makes its input projection from it by its own product: close to the
// double reference, the same bits on 1, 2 and 3 threads (H = 520: a partial
// last block, owned by either thread), over one step, packed variable-length
// batches and 40 rows (passes of unequal rows). Elsewhere there is no packed
// form. (The random configurations of check_config cover small layers.) Over
// 138 rows with AVX-512 a forward given no packed W_ih packs it itself
// (tuning::self_packs_projection): training and inference forwards then give
// the same bits as the inference with W_ih packed by the caller, on any thread
// count; below 128 rows they do not pack it.
TEST(RnnKernels, PackedInputWeights) {
  for (simd::Isa isa : available_isas()) {
    IsaScope scope(isa);
    SCOPED_TRACE(simd::isa_name(isa));
    check_packed_input_weights(isa != simd::Isa::kScalar);
    if (::testing::Test::HasFailure()) return;
  }
}

void check_packed_input_weights(bool takes) {
  for (CellType cell : {CellType::LSTM, CellType::GRU})
    for (int64_t H : {512, 520})
      for (int variant = 0; variant < 4; ++variant) {
        Config c = random_config(cell, 640 + H + variant);
        c.I = 512, c.H = H, c.P = 0;
        if (variant == 0) {
          c.N = 1, c.T = 1;
          c.batch_sizes = {1};
        } else if (variant == 1) {
          c.N = 3, c.T = 7;
          c.batch_sizes = batch_sizes_from_lengths({7, 5, 2});
        } else if (variant == 2) {
          c.N = 4, c.T = 10;
          c.batch_sizes.assign(10, 4);
        } else {
          c.N = 4, c.T = 48;
          c.batch_sizes = batch_sizes_from_lengths({48, 40, 30, 20});
        }
        c.weight_scale = 0.04;
        SCOPED_TRACE(c.describe());
        ASSERT_EQ(k::rnn_packed_input_weights_size(c.dims()) > 0, takes);
        if (!takes) {
          std::vector<float> w(static_cast<size_t>(c.G() * H * c.I)), packed(64);
          EXPECT_THROW(k::rnn_pack_input_weights(c.dims(), w.data(), packed.data()), rnnkit::Error);
          continue;
        }
        const Problem p = random_problem(c);
        const ReferenceOutputs ref = reference_forward(c, p);
        const KernelOutputs one = run_float_kernel_on(1, c, p);
        constexpr double tol = 1e-4;
        expect_close("y (packed W_ih)", one.y_inf_packed_ih, ref.y, tol, tol);
        expect_close("h_n (packed W_ih)", one.h_n_inf_packed_ih, ref.h_n, tol, tol);
        expect_close("c_n (packed W_ih)", one.c_n_inf_packed_ih, ref.c_n, tol, tol);
        expect_forward_same_on(2, c, p);
        expect_forward_same_on(3, c, p);
        const bool self_packs = k::tuning::self_packs_projection(c.dims());
        EXPECT_EQ(self_packs, variant == 3 && simd::active_isa() == simd::Isa::kAvx512);
        if (self_packs) {
          EXPECT_EQ(one.y_inf, one.y_inf_packed_ih) << "inference, W_ih packed by the forward";
          EXPECT_EQ(one.h_n_inf, one.h_n_inf_packed_ih) << "inference, W_ih packed by the forward";
          EXPECT_EQ(one.c_n_inf, one.c_n_inf_packed_ih) << "inference, W_ih packed by the forward";
          EXPECT_EQ(one.y, one.y_inf_packed_ih) << "training forward";
        }
        if (::testing::Test::HasFailure()) return;
      }
}

// Packed W_ih given where it does not belong: to a forward that takes none (a
// batch on the GEMM path) it is ignored; for another cell or input size, or as
// W_hh, it throws, naming the argument.
TEST(RnnKernels, PackedInputWeightsMismatches) {
  Config c = random_config(CellType::LSTM, 77);
  c.I = 512, c.H = 512, c.P = 0, c.N = 1, c.T = 4;
  c.batch_sizes.assign(4, 1);
  c.has_bias = false;
  c.separate_scratch = false;
  const simd::Kernels* kernels = simd::active_kernels();
  if (kernels == nullptr) {
    EXPECT_EQ(k::rnn_packed_input_weights_size(c.dims()), 0u) << "no packed W_ih without vector kernels";
    return;
  }
  const Problem p = random_problem(c);
  const std::vector<float> w_ih(p.w_ih.begin(), p.w_ih.end()), w_hh(p.w_hh.begin(), p.w_hh.end());
  std::vector<float> packed_ih(k::rnn_packed_input_weights_size(c.dims()));
  k::rnn_pack_input_weights(c.dims(), w_ih.data(), packed_ih.data());
  EXPECT_THROW(k::rnn_pack_input_weights(c.dims(), nullptr, packed_ih.data()), rnnkit::Error);

  // The forward of `other` (c with some sizes changed) on random input, with
  // the given packed W_ih and W_hh (or none).
  const auto forward = [&](const Config& other, const float* w_ih_packed, const float* w_hh_packed) {
    const RnnLayerDims d = other.dims();
    std::vector<float> wi(static_cast<size_t>(other.G() * other.H * other.I), 0.01f);
    if (other.I == c.I && other.cell == c.cell) wi = w_ih;
    RnnWeights<float> w;
    w.w_ih = wi.data();
    w.w_hh = w_hh.data();
    w.w_ih_packed = w_ih_packed;
    w.w_hh_packed = w_hh_packed;
    std::vector<float> x(static_cast<size_t>(other.rows() * other.I), 0.5f);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(p.x[i % p.x.size()]);
    std::vector<float> y(static_cast<size_t>(other.rows() * other.H)), ws(k::rnn_forward_workspace_size(d, false));
    k::rnn_forward<float>(d, w, x.data(), other.I, nullptr, nullptr, y.data(), other.H, nullptr, nullptr, ws.data(),
                          false);
    return y;
  };
  // A batch of 40 (the GEMM path): no packed form; the packing for one row is ignored.
  Config wide = c;
  wide.N = 40;
  wide.batch_sizes.assign(4, 40);
  ASSERT_STRNE(k::tuning::forward_path(wide.dims()), "small-batch");
  EXPECT_EQ(k::rnn_packed_input_weights_size(wide.dims()), 0u);
  EXPECT_THROW(k::rnn_pack_input_weights(wide.dims(), w_ih.data(), packed_ih.data()), rnnkit::Error);
  EXPECT_EQ(forward(wide, packed_ih.data(), nullptr), forward(wide, nullptr, nullptr));
  // A longer sequence takes the same packing.
  Config longer = c;
  longer.T = 40;
  longer.batch_sizes.assign(40, 1);
  EXPECT_TRUE(k::rnn_packed_input_weights_fit(longer.dims(), packed_ih.data()));
  EXPECT_FALSE(k::rnn_packed_input_weights_fit(wide.dims(), packed_ih.data()));
  // Made by the active kernels and given to those of another instruction set,
  // which take W_ih packed in another layout (AVX2: gate-major) or not at all
  // (scalar): ignored.
  for (simd::Isa isa : available_isas())
    if (isa != simd::active_isa()) {
      IsaScope scope(isa);
      SCOPED_TRACE(simd::isa_name(isa));
      EXPECT_EQ(k::rnn_packed_input_weights_size(c.dims()) > 0, isa != simd::Isa::kScalar);
      EXPECT_FALSE(k::rnn_packed_input_weights_fit(c.dims(), packed_ih.data()));
      EXPECT_EQ(forward(c, packed_ih.data(), nullptr), forward(c, nullptr, nullptr));
    }
  {  // With the packed projection turned off (the A/B knob) it is ignored too.
    struct Restore {
      ~Restore() { k::tuning::set_packed_projection(true); }
    } restore;
    k::tuning::set_packed_projection(false);
    EXPECT_EQ(k::rnn_packed_input_weights_size(c.dims()), 0u);
    EXPECT_FALSE(k::rnn_packed_input_weights_fit(c.dims(), packed_ih.data()));
    EXPECT_EQ(forward(c, packed_ih.data(), nullptr), forward(c, nullptr, nullptr));
  }
  // Taken: the projection's order of sums changes, not its value.
  expect_close("y (packed W_ih)", widen(forward(c, packed_ih.data(), nullptr)), widen(forward(c, nullptr, nullptr)),
               1e-5, 1e-5);

  const auto expect_error = [&](const Config& other, const float* w_ih_packed, const float* w_hh_packed,
                                const std::string& words) {
    try {
      forward(other, w_ih_packed, w_hh_packed);
      ADD_FAILURE() << "no error; expected one saying: " << words;
    } catch (const rnnkit::Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  Config wider = c;
  wider.I = 640;
  expect_error(wider, packed_ih.data(), nullptr, "w_ih_packed was not written by rnn_pack_input_weights");
  Config gru = c;
  gru.cell = CellType::GRU;
  expect_error(gru, packed_ih.data(), nullptr, "w_ih_packed was not written by rnn_pack_input_weights");
  expect_error(c, nullptr, packed_ih.data(), "w_hh_packed was not written by rnn_pack_weights");
  std::vector<float> packed_hh(k::rnn_packed_weights_size(c.dims()));
  k::rnn_pack_weights(c.dims(), w_hh.data(), packed_hh.data());
  expect_error(c, packed_hh.data(), nullptr, "w_ih_packed was not written by rnn_pack_input_weights");
}

// The inference forward of a configuration's layer (problem p, float) with W_hh
// packed in bfloat16 once; each call runs on the thread count and tunings then
// in force and returns y.
class Bf16Forward {
 public:
  Bf16Forward(const Config& c, const Problem& p)
      : c_(c),
        d_(c_.dims()),
        w_ih_(p.w_ih.begin(), p.w_ih.end()),
        w_hh_(p.w_hh.begin(), p.w_hh.end()),
        b_ih_(p.b_ih.begin(), p.b_ih.end()),
        b_hh_(p.b_hh.begin(), p.b_hh.end()),
        x_(p.x.begin(), p.x.end()),
        packed_(k::rnn_packed_weights_size(d_, k::PackedPrecision::kBFloat16)),
        ws_(k::rnn_forward_workspace_size(d_, false)) {
    k::rnn_pack_weights(d_, w_hh_.data(), packed_.data(), k::PackedPrecision::kBFloat16);
  }
  Bf16Forward(const Bf16Forward&) = delete;  // d_ points into c_
  Bf16Forward& operator=(const Bf16Forward&) = delete;
  std::vector<float> operator()() {
    RnnWeights<float> w;
    w.w_ih = w_ih_.data();
    w.w_hh = w_hh_.data();
    w.b_ih = c_.has_bias ? b_ih_.data() : nullptr;
    w.b_hh = c_.has_bias ? b_hh_.data() : nullptr;
    w.w_hh_packed = packed_.data();
    std::vector<float> y(static_cast<size_t>(c_.rows() * c_.H));
    k::rnn_forward<float>(d_, w, x_.data(), c_.I, nullptr, nullptr, y.data(), c_.H, nullptr, nullptr, ws_.data(),
                          false);
    return y;
  }

 private:
  Config c_;
  RnnLayerDims d_;
  std::vector<float> w_ih_, w_hh_, b_ih_, b_hh_, x_, packed_, ws_;
};

// Groups split into parts (blocks a thread done with its own group may run for a
// slower one; StepScheduler::set_parts) give the same bits as whole groups and
// as one thread: training and inference forward, float and bfloat16 packed
// weights, the backward that reads the forward's workspace; full and packed
// batches, hidden sizes with a partial last block. Three threads on this
// machine's two cores keep one of them behind now and then, so that parts are
// taken by helpers in some steps.
TEST(RnnKernels, SplitGroupsGiveTheSameBits) {
  if (simd::active_kernels() == nullptr) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH})
    for (int64_t H : {70, 200})
      for (int batch : {1, 3, 6}) {
        Config c = random_config(cell, 6100 + H + batch);
        c.I = 24, c.H = H, c.P = 0, c.N = batch, c.T = 24;
        c.separate_scratch = false;
        c.batch_sizes = batch == 6 ? batch_sizes_from_lengths({24, 19, 13, 13, 8, 1}) : std::vector<int64_t>(24, batch);
        c.weight_scale = 0.2;
        SCOPED_TRACE(c.describe());
        ASSERT_STREQ(k::tuning::forward_path(c.dims()), "small-batch");
        const Problem p = random_problem(c);
        const KernelOutputs one = run_float_kernel_on(1, c, p);
        for (int threads : {2, 3}) {
          SCOPED_TRACE(testing::Message() << threads << " threads");
          KernelOutputs whole, split;
          {
            const SplitScope scope(int64_t{1} << 40);
            whole = run_float_kernel_on(threads, c, p);
          }
          {
            const SplitScope scope(0);
            split = run_float_kernel_on(threads, c, p);
          }
          for (const KernelOutputs* more : {&whole, &split}) {
            EXPECT_EQ(one.y, more->y);
            EXPECT_EQ(one.h_n, more->h_n);
            EXPECT_EQ(one.c_n, more->c_n);
            EXPECT_EQ(one.y_inf, more->y_inf);
            EXPECT_EQ(one.h_n_inf, more->h_n_inf);
            EXPECT_EQ(one.c_n_inf, more->c_n_inf);
            EXPECT_EQ(one.y_inf_packed, more->y_inf_packed);
          }
          // The backward's whole-sequence GEMMs are oneDNN's, whose sums depend on
          // its thread count: against whole groups on as many threads.
          expect_same_bits(whole, split);
        }
        // bfloat16 packed weights, inference.
        Bf16Forward bf16(c, p);
        const auto forward_bf16 = [&](int threads, int64_t split_bytes) {
          const ThreadsScope scope(threads);
          const SplitScope split(split_bytes);
          return bf16();
        };
        const std::vector<float> want = forward_bf16(1, -1);
        EXPECT_EQ(forward_bf16(3, 0), want) << "bfloat16, 3 threads, split groups";
        EXPECT_EQ(forward_bf16(2, 0), want) << "bfloat16, 2 threads, split groups";
      }
}

// The small-batch products' weight prefetches (any distance, or none) change no
// bits: float training and inference forward, the backward, and bfloat16
// weights, for batches that take k-major and gate-major passes, a partial last
// block included; on every instruction set the CPU has.
TEST(RnnKernels, WeightPrefetchGivesTheSameBits) {
  int isas = 0;
  for (simd::Isa isa : available_isas()) {
    if (simd::kernels(isa) == nullptr) continue;
    ++isas;
    SCOPED_TRACE(simd::isa_name(isa));
    const IsaScope isa_scope(isa);
    for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH})
      for (int batch : {1, 3, 4}) {
        Config c = random_config(cell, 6300 + batch);
        c.I = 20, c.H = 200, c.P = 0, c.N = batch, c.T = 12;
        c.separate_scratch = false;
        c.batch_sizes.assign(12, batch);
        c.weight_scale = 0.2;
        SCOPED_TRACE(c.describe());
        ASSERT_STREQ(k::tuning::forward_path(c.dims()), "small-batch");
        const Problem p = random_problem(c);
        Bf16Forward forward_bf16(c, p);
        KernelOutputs none;
        std::vector<float> none_bf16;
        {
          const PrefetchScope scope(0);
          none = run_float_kernel_on(2, c, p);
          const ThreadsScope threads(2);
          none_bf16 = forward_bf16();
        }
        for (int64_t bytes : {int64_t{64}, int64_t{2048}, int64_t{4096}}) {
          SCOPED_TRACE(testing::Message() << "prefetch " << bytes << " bytes ahead");
          const PrefetchScope scope(bytes);
          expect_same_bits(run_float_kernel_on(2, c, p), none);
          const ThreadsScope threads(2);
          EXPECT_EQ(forward_bf16(), none_bf16) << "bfloat16";
        }
      }
  }
  if (isas == 0) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
}

// Hidden sizes of one 16-unit block run the small-batch forward as a team of one
// thread, whose input-projection GEMMs must then run on that thread alone, as
// with one thread configured: oneDNN would otherwise start a nested team there,
// and its sgemm rounds a 92 x 2 x 37 product (this packed batch) differently on
// two threads than on one.
TEST(RnnKernels, OneGroupForwardDoesNotDependOnThreadCount) {
  if (simd::active_kernels() == nullptr) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH})
    for (int64_t H : {2, 3, 16}) {
      Config c = random_config(cell, 977 + H);
      c.I = 37, c.H = H, c.P = 0, c.N = 6, c.T = 31;
      c.batch_sizes = batch_sizes_from_lengths({31, 26, 17, 9, 6, 3});
      SCOPED_TRACE(c.describe());
      ASSERT_STREQ(k::tuning::forward_path(c.dims()), "small-batch");
      expect_forward_same_on(2, c, random_problem(c));
    }
}

// Inside a parallel region of any team size, a kernel started there runs on one
// thread.
TEST(RnnKernels, ThreadCountInsideParallelRegions) {
  const ThreadsScope two(2);
  int inside_one = 0, inside_two[2] = {0, 0};
#pragma omp parallel num_threads(1)
  inside_one = rnnkit::get_num_threads();
#pragma omp parallel num_threads(2)
  inside_two[omp_get_thread_num()] = rnnkit::get_num_threads();
  EXPECT_EQ(inside_one, 1);
  EXPECT_EQ(inside_two[0], 1);
  EXPECT_EQ(inside_two[1], 1);
  EXPECT_EQ(rnnkit::get_num_threads(), 2);
}

// A kernel called from inside a parallel region (two directions side by side)
// runs on its own thread and gives the same result as alone.
TEST(RnnKernels, DirectionsRunConcurrently) {
  Config c = random_config(CellType::LSTM, 4242);
  c.I = 16, c.H = 48, c.P = 0, c.N = 2, c.T = 7;
  c.batch_sizes.assign(7, 2);
  c.weight_scale = 0.3;
  const Problem p = random_problem(c);
  std::vector<double> alone[2], together[2];
  for (int dir = 0; dir < 2; ++dir) {
    Config cd = c;
    cd.reverse = dir == 1;
    alone[dir] = run_kernel<float>(cd, p).y;
  }
#pragma omp parallel for num_threads(2)
  for (int dir = 0; dir < 2; ++dir) {
    EXPECT_EQ(rnnkit::get_num_threads(), 1);
    Config cd = c;
    cd.reverse = dir == 1;
    together[dir] = run_kernel<float>(cd, p).y;
  }
  EXPECT_EQ(alone[0], together[0]);
  EXPECT_EQ(alone[1], together[1]);
}

// A sequence run as two calls over consecutive time chunks, the second starting
// from the first's h_n/c_n (backward: the chunks in reverse order, each taking
// the later chunk's dh0/dc0 as dh_n/dc_n), gives the one-call result: what a
// module needs to pipeline stacked layers in a wavefront.
template <class T>
void check_time_chunks(CellType cell, bool reverse, int64_t N, double tol) {
  Config c = random_config(cell, 8800 + static_cast<uint64_t>(cell) * 2 + reverse);
  c.I = 12, c.H = 24, c.P = 0, c.N = N, c.T = 7;
  c.batch_sizes.assign(7, N);
  c.reverse = reverse;
  c.weight_scale = 0.3;
  c.separate_scratch = false;
  SCOPED_TRACE(c.describe());
  const Problem p = random_problem(c);
  const bool lstm = c.is_lstm();
  const int64_t I = c.I, H = c.H, steps = c.T;
  const std::vector<T> w_ih = to<T>(p.w_ih), w_hh = to<T>(p.w_hh), b_ih = to<T>(p.b_ih),
                       b_hh = to<T>(p.b_hh), x = to<T>(p.x), h0 = to<T>(p.h0), c0 = to<T>(p.c0),
                       dy = to<T>(p.r_y);
  RnnWeights<T> w;
  w.w_ih = w_ih.data();
  w.w_hh = w_hh.data();
  w.b_ih = b_ih.data();
  w.b_hh = b_hh.data();
  // Steps [t0, t1): x and y rows from t0 * N.
  struct Run {
    std::vector<T> y, h_n, c_n, ws, dx, dh0, dc0;
  };
  // The dims of a call over steps [t0, t1); bs holds its batch sizes.
  auto chunk_dims = [&](int64_t t0, int64_t t1, std::vector<int64_t>& bs) {
    RnnLayerDims d = c.dims();
    bs.assign(static_cast<size_t>(t1 - t0), N);
    d.steps = t1 - t0;
    d.batch_sizes = bs.data();
    return d;
  };
  auto forward = [&](int64_t t0, int64_t t1, const T* h_in, const T* c_in, Run& r) {
    std::vector<int64_t> bs;
    const RnnLayerDims d = chunk_dims(t0, t1, bs);
    r.y.assign((t1 - t0) * N * H, 0);
    r.h_n.assign(N * H, 0);
    r.c_n.assign(N * H, 0);
    r.ws.assign(k::rnn_forward_workspace_size(d, true), 0);
    k::rnn_forward<T>(d, w, x.data() + t0 * N * I, I, h_in, lstm ? c_in : nullptr, r.y.data(), H,
                      r.h_n.data(), lstm ? r.c_n.data() : nullptr, r.ws.data(), true);
  };
  auto backward = [&](int64_t t0, int64_t t1, const T* h_in, const T* c_in, const T* dh_n,
                      const T* dc_n, Run& r, std::vector<T>& dw_ih, std::vector<T>& dw_hh) {
    std::vector<int64_t> bs;
    const RnnLayerDims d = chunk_dims(t0, t1, bs);
    r.dx.assign((t1 - t0) * N * I, 0);
    r.dh0.assign(N * H, 0);
    r.dc0.assign(N * H, 0);
    std::vector<T> bws(k::rnn_backward_workspace_size(d));
    RnnGrads<T> g;
    g.dw_ih = dw_ih.data();
    g.dw_hh = dw_hh.data();
    k::rnn_backward<T>(d, w, x.data() + t0 * N * I, I, h_in, lstm ? c_in : nullptr, r.y.data(), H,
                       r.ws.data(), dy.data() + t0 * N * H, H, dh_n, lstm ? dc_n : nullptr,
                       r.dx.data(), I, T(0), r.dh0.data(), lstm ? r.dc0.data() : nullptr, g,
                       bws.data());
  };
  std::vector<T> dw_ih_one(w_ih.size()), dw_hh_one(w_hh.size());
  std::vector<T> dw_ih_two(w_ih.size()), dw_hh_two(w_hh.size());
  Run one;
  forward(0, steps, h0.data(), c0.data(), one);
  backward(0, steps, h0.data(), c0.data(), nullptr, nullptr, one, dw_ih_one, dw_hh_one);
  // The chunk processed first: [0, 3) forward, [3, steps) reverse.
  const int64_t cut = 3;
  const int64_t a0 = reverse ? cut : 0, a1 = reverse ? steps : cut;
  const int64_t b0 = reverse ? 0 : cut, b1 = reverse ? cut : steps;
  Run first, second;
  forward(a0, a1, h0.data(), c0.data(), first);
  forward(b0, b1, first.h_n.data(), first.c_n.data(), second);
  backward(b0, b1, first.h_n.data(), first.c_n.data(), nullptr, nullptr, second, dw_ih_two,
           dw_hh_two);
  backward(a0, a1, h0.data(), c0.data(), second.dh0.data(), second.dc0.data(), first, dw_ih_two,
           dw_hh_two);
  auto part = [&](const std::vector<T>& whole, int64_t t0, int64_t t1, int64_t width) {
    return widen(std::vector<T>(whole.begin() + t0 * N * width, whole.begin() + t1 * N * width));
  };
  expect_close("y (first chunk)", widen(first.y), part(one.y, a0, a1, H), tol, tol);
  expect_close("y (second chunk)", widen(second.y), part(one.y, b0, b1, H), tol, tol);
  expect_close("h_n", widen(second.h_n), widen(one.h_n), tol, tol);
  expect_close("dx (first chunk)", widen(first.dx), part(one.dx, a0, a1, I), tol, tol);
  expect_close("dx (second chunk)", widen(second.dx), part(one.dx, b0, b1, I), tol, tol);
  expect_close("dh0", widen(first.dh0), widen(one.dh0), tol, tol);
  expect_close("dw_ih", widen(dw_ih_two), widen(dw_ih_one), tol, tol);
  expect_close("dw_hh", widen(dw_hh_two), widen(dw_hh_one), tol, tol);
}

TEST(RnnKernels, TimeChunksCompose) {
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH})
    for (bool reverse : {false, true})
      for (int64_t N : {2, 12}) {
        check_time_chunks<double>(cell, reverse, N, 1e-12);
        check_time_chunks<float>(cell, reverse, N, 2e-5);
      }
}

// Packed weights exist in float32 for both paths, in bfloat16 for the small-batch
// one only; weights packed for another batch are ignored, not misread.
TEST(RnnKernels, PackedWeightsForEachPath) {
  // An LSTM with a projection: one step takes the GEMM path (no bfloat16 form),
  // two the small-batch one where there are vector kernels.
  Config c = random_config(CellType::LSTM, 7);
  c.I = 5, c.H = 8, c.P = 3, c.N = 2, c.T = 1;
  c.batch_sizes = {2};
  c.separate_scratch = false;
  EXPECT_EQ(k::rnn_packed_weights_size(c.dims(), k::PackedPrecision::kBFloat16), 0u);
  std::vector<float> w(4 * 8 * 3), packed(64);
  EXPECT_THROW(k::rnn_pack_weights(c.dims(), w.data(), packed.data(), k::PackedPrecision::kBFloat16),
               rnnkit::Error);
  c.T = 2;
  c.batch_sizes = {2, 2};
  EXPECT_EQ(k::rnn_packed_weights_size(c.dims(), k::PackedPrecision::kBFloat16) > 0,
            simd::active_kernels() != nullptr);
  // An LSTM batch of 40 on the GEMM path (above the small-batch path's 32 rows,
  // and W_hh of 2.5 MB above the 1 MiB to which the AVX-512 kernels take the
  // lanes product for LSTM and GRU) given weights packed for another batch or
  // another path: they are ignored, and the forward packs for itself.
  c = random_config(CellType::LSTM, 8);
  c.I = 5, c.P = 0, c.H = 400, c.N = 40, c.T = 3;
  c.separate_scratch = false;
  c.batch_sizes = {40, 40, 40};
  ASSERT_STREQ(k::tuning::forward_path(c.dims()), "gemm");
  const auto packed_for = [](Config other, int64_t N, const std::vector<float>& w_hh) {
    other.N = N;
    other.batch_sizes.assign(3, N);
    std::vector<float> out(k::rnn_packed_weights_size(other.dims()));
    if (!out.empty()) k::rnn_pack_weights(other.dims(), w_hh.data(), out.data());
    return out;
  };
  Problem p = random_problem(c);
  std::vector<float> w_hh(p.w_hh.begin(), p.w_hh.end());
  const std::vector<float> packed9 = packed_for(c, 9, w_hh);
  ASSERT_FALSE(packed9.empty()) << "packed weights for a batch of 9 (small-batch or GEMM path)";
  std::vector<float> packed16;
  {
    const LanesThresholdScope any_size(0);
    packed16 = packed_for(c, 16, w_hh);  // rows-in-lanes with the AVX2 kernels, small-batch with AVX-512
  }
  std::vector<float> w_ih(p.w_ih.begin(), p.w_ih.end()), x(p.x.begin(), p.x.end());
  RnnWeights<float> wt;
  wt.b_ih = wt.b_hh = nullptr;
  RnnLayerDims d;
  int64_t ldy = 0;
  std::vector<float> ws;
  const auto set_layer = [&](const Config& layer) {
    wt.w_ih = w_ih.data();
    wt.w_hh = w_hh.data();
    d = layer.dims();
    d.has_bias = false;
    ldy = layer.H;
    ws.assign(k::rnn_forward_workspace_size(d, false), 0.0f);
  };
  set_layer(c);
  // The forward of c (d, ws) on input xs with the given packed weights (or none).
  const auto forward_on = [&](const std::vector<float>& xs, const float* packed) {
    std::vector<float> out(static_cast<size_t>(d.steps * d.batch * ldy));
    wt.w_hh_packed = packed;
    k::rnn_forward<float>(d, wt, xs.data(), d.input_size, nullptr, nullptr, out.data(), ldy, nullptr, nullptr,
                          ws.data(), false);
    return out;
  };
  const auto forward = [&](const float* packed) { return forward_on(x, packed); };
  const std::vector<float> y = forward(nullptr);
  EXPECT_EQ(forward(packed9.data()), y) << "weights packed for a batch of 9";
  {
    // A training forward with a separate scratch needs one unless the packed
    // weights fit.
    RnnLayerDims ds = d;
    ds.separate_scratch = true;
    std::vector<float> wst(k::rnn_forward_workspace_size(ds, true)), out(static_cast<size_t>(c.rows() * ldy));
    wt.w_hh_packed = packed9.data();
    try {
      k::rnn_forward<float>(ds, wt, x.data(), c.I, nullptr, nullptr, out.data(), ldy, nullptr, nullptr, wst.data(),
                            true, nullptr);
      ADD_FAILURE() << "no error for a null scratch with weights packed for another batch";
    } catch (const rnnkit::Error& e) {
      EXPECT_NE(std::string(e.what()).find("scratch is null (and w_hh_packed does not fit)"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(forward(packed16.data()), y) << "weights packed for a batch of 16";
  // And the other way: an Elman batch of 16 on the lanes path given weights
  // that oneDNN packed for its matmul at the same batch (packed where the AVX2
  // kernels' rule puts Elman 400 on the GEMM path), and weights packed for it.
  const simd::Kernels* kern = simd::active_kernels();
  if (kern == nullptr || simd::kernels(simd::Isa::kAvx2) == nullptr) return;
  c = random_config(CellType::RNN_TANH, 9);
  c.I = 5, c.P = 0, c.H = 400, c.N = 16, c.T = 3;
  c.separate_scratch = false;
  c.batch_sizes = {16, 16, 16};
  p = random_problem(c);
  w_hh.assign(p.w_hh.begin(), p.w_hh.end());
  w_ih.assign(p.w_ih.begin(), p.w_ih.end());
  std::vector<float> matmul16;
  {
    const IsaScope avx2(simd::Isa::kAvx2);
    ASSERT_STREQ(k::tuning::forward_path(c.dims()), "gemm");
    matmul16 = packed_for(c, 16, w_hh);
  }
  const LanesThresholdScope any_size(0);
  ASSERT_STREQ(k::tuning::forward_path(c.dims()), "lanes");
  const std::vector<float> lanes16 = packed_for(c, 16, w_hh);
  const std::vector<float> x16(p.x.begin(), p.x.end());
  set_layer(c);
  const auto forward16 = [&](const float* packed) { return forward_on(x16, packed); };
  EXPECT_EQ(forward16(matmul16.data()), forward16(nullptr)) << "matmul-packed weights on the lanes path";
  EXPECT_EQ(forward16(lanes16.data()), forward16(nullptr)) << "lanes-packed weights on the lanes path";
}

// An LSTM with a projection on the small-batch path takes W_hh and W_hr
// packed by the caller (each, or both; a training forward needs no scratch
// when both are given) with the same bits as packing them itself; packings of
// the wrong kind or sizes throw; where the forward takes the GEMM path (9 rows,
// or no vector kernels) there is no packed W_hr and one made for 3 rows is
// ignored.
TEST(RnnKernels, ProjectionPathPackedWeights) {
  for (simd::Isa isa : available_isas()) {
    const IsaScope scope(isa);
    SCOPED_TRACE(simd::isa_name(isa));
    Config c = random_config(CellType::LSTM, 41);
    c.I = 20, c.H = 70, c.P = 13, c.N = 3, c.T = 5, c.has_bias = true;
    c.batch_sizes = batch_sizes_from_lengths({5, 3, 2});
    c.separate_scratch = false;
    const RnnLayerDims d = c.dims();
    if (isa == simd::Isa::kScalar) {
      EXPECT_STREQ(k::tuning::forward_path(d), "gemm");
      EXPECT_EQ(k::rnn_packed_projection_weights_size(d), 0u);
      continue;
    }
    ASSERT_STREQ(k::tuning::forward_path(d), "small-batch");
    const Problem p = random_problem(c);
    const auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
    const std::vector<float> x = f(p.x), w_ih = f(p.w_ih), w_hh = f(p.w_hh), w_hr = f(p.w_hr), b_ih = f(p.b_ih),
                             b_hh = f(p.b_hh), h0 = f(p.h0), c0 = f(p.c0);
    RnnWeights<float> w;
    w.w_ih = w_ih.data(), w.w_hh = w_hh.data(), w.w_hr = w_hr.data(), w.b_ih = b_ih.data(), w.b_hh = b_hh.data();
    std::vector<float> packed(k::rnn_packed_weights_size(d)), packed_hr(k::rnn_packed_projection_weights_size(d));
    ASSERT_FALSE(packed.empty());
    ASSERT_FALSE(packed_hr.empty());
    k::rnn_pack_weights(d, w_hh.data(), packed.data());
    k::rnn_pack_projection_weights(d, w_hr.data(), packed_hr.data());
    EXPECT_TRUE(k::rnn_packed_weights_fit(d, packed.data()));
    EXPECT_TRUE(k::rnn_packed_projection_weights_fit(d, packed_hr.data()));
    EXPECT_FALSE(k::rnn_packed_projection_weights_fit(d, packed.data()));
    EXPECT_FALSE(k::rnn_packed_weights_fit(d, packed_hr.data()));
    // The forward of dims dd (inference or training) with these weights: y, h_n, c_n.
    const auto run = [&](const RnnLayerDims& dd, const RnnWeights<float>& wt, bool training) {
      const int64_t rows = c.rows();
      std::vector<float> y(static_cast<size_t>(rows * c.P)), h_n(static_cast<size_t>(dd.batch * c.P)),
          c_n(static_cast<size_t>(dd.batch * c.H)), ws(k::rnn_forward_workspace_size(dd, training));
      k::rnn_forward<float>(dd, wt, x.data(), c.I, h0.data(), c0.data(), y.data(), c.P, h_n.data(), c_n.data(),
                            ws.data(), training, nullptr);
      y.insert(y.end(), h_n.begin(), h_n.end());
      y.insert(y.end(), c_n.begin(), c_n.end());
      return y;
    };
    const std::vector<float> want = run(d, w, false);
    for (int given = 1; given < 4; ++given) {
      RnnWeights<float> wp = w;
      if (given & 1) wp.w_hh_packed = packed.data();
      if (given & 2) wp.w_hr_packed = packed_hr.data();
      EXPECT_EQ(run(d, wp, false), want) << "given " << given;
    }
    {  // The given W_hr is the one used: another one's packing changes the results.
      std::vector<float> w_hr2(w_hr), packed_hr2(packed_hr.size());
      for (float& v : w_hr2) v = -v;
      k::rnn_pack_projection_weights(d, w_hr2.data(), packed_hr2.data());
      RnnWeights<float> wp = w;
      wp.w_hr_packed = packed_hr2.data();
      const std::vector<float> other = run(d, wp, false);
      wp.w_hr_packed = nullptr;
      wp.w_hr = w_hr2.data();
      EXPECT_NE(other, want);
      EXPECT_EQ(other, run(d, wp, false)) << "packed W_hr against W_hr itself";
    }
    {
      RnnWeights<float> wp = w;
      wp.w_hh_packed = packed.data();
      wp.w_hr_packed = packed_hr.data();
      RnnLayerDims ds = d;
      ds.separate_scratch = true;  // no scratch passed: both given
      EXPECT_EQ(run(ds, wp, true), want) << "training forward, both given";
      wp.w_hh_packed = packed_hr.data();
      EXPECT_THROW(run(d, wp, false), rnnkit::Error) << "W_hr's packing as W_hh";
      wp.w_hh_packed = nullptr;
      wp.w_hr_packed = packed.data();
      EXPECT_THROW(run(d, wp, false), rnnkit::Error) << "W_hh's packing as W_hr";
      Config other = c;
      other.P = 12;
      std::vector<float> w_hr12(12 * 70, 0.5f), packed12(k::rnn_packed_projection_weights_size(other.dims()));
      k::rnn_pack_projection_weights(other.dims(), w_hr12.data(), packed12.data());
      wp.w_hr_packed = packed12.data();
      EXPECT_THROW(run(d, wp, false), rnnkit::Error) << "W_hr packed for another proj_size";
    }
    // 9 rows: the GEMM path, no packed W_hr; one packed for 3 rows is ignored.
    Config wide = c;
    wide.N = 9;
    wide.batch_sizes.assign(5, 9);
    const RnnLayerDims d9 = wide.dims();
    EXPECT_STREQ(k::tuning::forward_path(d9), "gemm");
    EXPECT_EQ(k::rnn_packed_projection_weights_size(d9), 0u);
    EXPECT_FALSE(k::rnn_packed_projection_weights_fit(d9, packed_hr.data()));
    EXPECT_THROW(k::rnn_pack_projection_weights(d9, w_hr.data(), packed_hr.data()), rnnkit::Error);
  }
}

// Small-batch float weights are packed k-major for passes that take all gates
// at once and gate-major where a batch's passes take the gates a few at a time
// (8-lane vectors, more than one row: Kernels::gate_major). Packed for one batch
// and used for another, they are used where the layouts agree and ignored
// (the forward packs for itself) where they differ: either way the results are
// those of the forward packing for itself, bit for bit.
// pack_recurrent against its definition, element by element: blocks of 16 units,
// each [K][G][16] or, gate-major, [G][K][16]; units past H zero. Sizes with and
// without whole 16 x 16 tiles (which go through registers, AVX-512 or AVX2, the
// rest through the tile loop), packed in two block ranges as the forward's
// groups pack them; on every instruction set the CPU has, scalar included.
TEST(RnnKernels, PackRecurrentLayout) {
  std::mt19937_64 rng(71);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  constexpr int64_t B = simd::kPackBlock;
  for (simd::Isa isa : available_isas())
    for (int64_t G : {1, 3, 4})
      for (int64_t H : {16, 40, 64})
        for (int64_t K : {5, 16, 37, 48})
          for (bool gate_major : {false, true}) {
            SCOPED_TRACE(testing::Message() << simd::isa_name(isa) << " G=" << G << " H=" << H << " K=" << K
                                            << " gate_major=" << gate_major);
            const IsaScope isa_scope(isa);
            std::vector<float> w(static_cast<size_t>(G * H * K));
            for (float& e : w) e = uni(rng);
            const int64_t blocks = (H + B - 1) / B;
            ASSERT_EQ(simd::packed_recurrent_size(G, H, K), blocks * K * G * B);
            std::vector<float> packed(static_cast<size_t>(blocks * K * G * B), static_cast<float>(kNaN));
            simd::pack_recurrent(G, H, K, w.data(), packed.data(), 0, blocks / 2, gate_major);
            simd::pack_recurrent(G, H, K, w.data(), packed.data(), blocks / 2, blocks, gate_major);
            for (int64_t jb = 0; jb < blocks; ++jb)
              for (int64_t g = 0; g < G; ++g)
                for (int64_t k = 0; k < K; ++k)
                  for (int64_t u = 0; u < B; ++u) {
                    const int64_t unit = jb * B + u;
                    const float want = unit < H ? w[static_cast<size_t>((g * H + unit) * K + k)] : 0.0f;
                    const int64_t at = jb * K * G * B + (gate_major ? (g * K + k) * B : (k * G + g) * B) + u;
                    ASSERT_EQ(packed[static_cast<size_t>(at)], want) << "block " << jb << " gate " << g << " k " << k
                                                                     << " unit " << u;
                  }
          }
}

TEST(RnnKernels, PackedSmallBatchLayouts) {
  for (simd::Isa isa : available_isas()) {
    const simd::Kernels* kern = simd::kernels(isa);
    if (kern == nullptr) continue;
    SCOPED_TRACE(simd::isa_name(isa));
    const IsaScope scope(isa);
    EXPECT_FALSE(kern->gate_major(4, 1)) << "one row takes all gates per pass";
    EXPECT_EQ(kern->gate_major(4, 4), isa == simd::Isa::kAvx2) << "4 rows of 4 gates: 32 accumulators with 8 lanes";
    EXPECT_FALSE(kern->gate_major(1, 4)) << "one gate: one layout";
    for (CellType cell : {CellType::LSTM, CellType::GRU}) {
      for (int64_t N : {1, 3, 4}) {
        SCOPED_TRACE(testing::Message() << "cell " << int(cell) << " batch " << N);
        Config c = random_config(cell, 11 + N);
        c.I = 24, c.H = 40, c.P = 0, c.N = N, c.T = 4;  // H = 40: a partial last block
        c.has_bias = true;
        c.batch_sizes.assign(4, N);
        c.separate_scratch = false;
        ASSERT_STREQ(k::tuning::forward_path(c.dims()), "small-batch");
        const Problem p = random_problem(c);
        const std::vector<float> w_ih(p.w_ih.begin(), p.w_ih.end()), w_hh(p.w_hh.begin(), p.w_hh.end());
        const std::vector<float> b_ih(p.b_ih.begin(), p.b_ih.end()), b_hh(p.b_hh.begin(), p.b_hh.end());
        const std::vector<float> x(p.x.begin(), p.x.end());
        const RnnLayerDims d = c.dims();
        std::vector<float> ws(k::rnn_forward_workspace_size(d, false));
        const auto forward = [&](const float* packed) {
          RnnWeights<float> wt;
          wt.w_ih = w_ih.data();
          wt.w_hh = w_hh.data();
          wt.b_ih = b_ih.data();
          wt.b_hh = b_hh.data();
          wt.w_hh_packed = packed;
          std::vector<float> y(static_cast<size_t>(c.rows() * c.H));
          k::rnn_forward<float>(d, wt, x.data(), c.I, nullptr, nullptr, y.data(), c.H, nullptr, nullptr,
                                ws.data(), false);
          return y;
        };
        const std::vector<float> want = forward(nullptr);
        for (int64_t packed_n : {1, 2, 4}) {
          Config other = c;
          other.N = packed_n;
          other.batch_sizes.assign(4, packed_n);
          std::vector<float> packed(k::rnn_packed_weights_size(other.dims()));
          ASSERT_FALSE(packed.empty());
          k::rnn_pack_weights(other.dims(), w_hh.data(), packed.data());
          EXPECT_EQ(forward(packed.data()), want) << "weights packed for a batch of " << packed_n;
        }
      }
    }
  }
}

// packed_gemm with row strides other than the widths (a GRU's gates rows, a
// bidirectional layer's y) gives exactly what it gives on dense copies of the same
// rows, and the product itself, for both weight orientations; without
// accumulating (C = A op(W), as the GEMM path's stage takes it) the same bits as
// the product added to zeros, whatever C held before, strided or dense.
TEST(RnnKernels, PackedGemmStridedOperands) {
  UniformFloats uni(91);
  const auto fill = [&](std::vector<float>& v) { uni.fill(v); };
  for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{16, 96, 40}, {9, 48, 64}, {33, 80, 24}, {20, 160, 1500}}) {
    ASSERT_GT(k::packed_gemm_size(M, N, K), 0) << "oneDNN packs weights for its matmul or its packed sgemm";
    for (bool w_is_kn : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " K=" << K << " w_is_kn=" << w_is_kn);
      const int64_t lda = K + 24, ldc = N + 32, ldw = w_is_kn ? N : K;
      std::vector<float> w(static_cast<size_t>(N * K)), a(static_cast<size_t>(M * lda)),
          c(static_cast<size_t>(M * ldc));
      fill(w), fill(a), fill(c);
      std::vector<float> packed(static_cast<size_t>(k::packed_gemm_size(M, N, K)));
      ASSERT_TRUE(k::packed_gemm_pack(M, N, K, w.data(), ldw, w_is_kn, packed.data(),
                                      static_cast<int64_t>(packed.size())));
      // Dense copies of the rows, and the reference product.
      std::vector<float> a_dense(static_cast<size_t>(M * K)), c_dense(static_cast<size_t>(M * N));
      for (int64_t i = 0; i < M; ++i) {
        std::copy_n(a.begin() + i * lda, K, a_dense.begin() + i * K);
        std::copy_n(c.begin() + i * ldc, N, c_dense.begin() + i * N);
      }
      std::vector<double> ref(static_cast<size_t>(M * N));
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double sum = c_dense[i * N + j];
          for (int64_t q = 0; q < K; ++q)
            sum += double(a_dense[i * K + q]) * (w_is_kn ? w[q * N + j] : w[j * K + q]);
          ref[i * N + j] = sum;
        }
      const std::vector<float> c_before = c;
      // The packed copy is position-independent and needs no alignment: packed
      // at an odd float offset, then moved to another one, it gives the same bits.
      std::vector<float> shifted(packed.size() + 2);
      ASSERT_TRUE(k::packed_gemm_pack(M, N, K, w.data(), ldw, w_is_kn, shifted.data() + 1,
                                      static_cast<int64_t>(packed.size())));
      std::vector<float> moved(packed.size() + 3);
      std::copy_n(shifted.begin() + 1, packed.size(), moved.begin() + 3);
      std::vector<float> c_moved = c_dense;
      k::packed_gemm(M, N, K, a_dense.data(), K, moved.data() + 3, w.data(), ldw, w_is_kn, c_moved.data(), N);
      k::packed_gemm(M, N, K, a.data(), lda, packed.data(), w.data(), ldw, w_is_kn, c.data(), ldc);
      k::packed_gemm(M, N, K, a_dense.data(), K, packed.data(), w.data(), ldw, w_is_kn, c_dense.data(), N);
      ASSERT_EQ(c_moved, c_dense) << "weights packed at an odd offset and moved";
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
          const size_t at = static_cast<size_t>(i * ldc + j);
          if (j >= N) {
            ASSERT_EQ(c[at], c_before[at]) << "column " << j << " beyond N was written";
            continue;
          }
          ASSERT_EQ(c[at], c_dense[i * N + j]) << "row " << i << " column " << j;
          ASSERT_NEAR(c[at], ref[i * N + j], 1e-4 * K) << "row " << i << " column " << j;
        }
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> added(static_cast<size_t>(M * N), 0.0f), set_dense(added.size(), nan),
          set_strided(static_cast<size_t>(M * ldc), nan);
      k::packed_gemm(M, N, K, a_dense.data(), K, packed.data(), w.data(), ldw, w_is_kn, added.data(), N);
      k::packed_gemm(M, N, K, a_dense.data(), K, packed.data(), w.data(), ldw, w_is_kn, set_dense.data(), N,
                     false);
      k::packed_gemm(M, N, K, a.data(), lda, packed.data(), w.data(), ldw, w_is_kn, set_strided.data(), ldc,
                     false);
      EXPECT_EQ(set_dense, added) << "dense C, accumulate = false";
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
          const float got = set_strided[static_cast<size_t>(i * ldc + j)];
          if (j >= N)
            ASSERT_TRUE(std::isnan(got)) << "column " << j << " beyond N was written (accumulate = false)";
          else
            ASSERT_EQ(got, added[static_cast<size_t>(i * N + j)]) << "row " << i << " column " << j;
        }
    }
  }
}

// gemm(false, true) on the brgemm matmul that reads W [N, K] through its
// strides (gemm.cpp, plain_weights_gemm; where oneDNN has it): against a double
// product, with beta 0 and 1, row strides other than the widths and columns past
// N untouched; the same bits on 1, 2 and 3 threads and on one thread inside a
// parallel region (a stacked layer's wavefront runs its products there), for
// the shapes that take it (not 700 x 2048 nor 15 rows by the size rule, nor
// strided A and C).
TEST(RnnKernels, PlainWeightsGemmSameBits) {
  UniformFloats uni(97);
  const auto fill = [&](std::vector<float>& v) { uni.fill(v); };
  int taken = 0;
  for (const auto& [M, N, K, pad] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{196, 16, 30, 0},
                                     {25, 2048, 512, 0},
                                     {600, 1024, 1024, 0},
                                     {300, 48, 100, 3},
                                     {512, 96, 64, 5},
                                     {700, 2048, 512, 0},
                                     {15, 1024, 1024, 0}}) {
    const int64_t lda = K + pad, ldb = K, ldc = N + pad;
    SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " K=" << K << " lda=" << lda << " ldc=" << ldc);
    const bool matmul = k::gemm_takes_plain_matmul(M, N, K, lda, ldb, ldc);
    if (M == 700) EXPECT_FALSE(matmul) << "700 rows of 2048 outputs stay with sgemm";
    if (M == 15) EXPECT_FALSE(matmul) << "below 16 rows sgemm stays";
    if (!matmul) continue;
    ++taken;
    std::vector<float> a(static_cast<size_t>(M * lda)), w(static_cast<size_t>(N * ldb)), c0(static_cast<size_t>(M * ldc));
    fill(a), fill(w), fill(c0);
    for (float beta : {0.0f, 1.0f}) {
      SCOPED_TRACE(::testing::Message() << "beta=" << beta);
      std::vector<float> by_threads[3];
      for (int threads = 1; threads <= 3; ++threads) {
        const ThreadsScope scope(threads);
        by_threads[threads - 1] = c0;
        k::gemm(false, true, M, N, K, 1.0f, a.data(), lda, w.data(), ldb, beta, by_threads[threads - 1].data(), ldc);
      }
      EXPECT_EQ(by_threads[0], by_threads[1]);
      EXPECT_EQ(by_threads[0], by_threads[2]);
      std::vector<float> inside[2] = {c0, c0};
      {
        const ThreadsScope scope(2);
#pragma omp parallel num_threads(2)
        {
          std::vector<float>& c = inside[omp_get_thread_num()];
          k::gemm(false, true, M, N, K, 1.0f, a.data(), lda, w.data(), ldb, beta, c.data(), ldc);
        }
      }
      EXPECT_EQ(inside[0], by_threads[1]) << "inside a parallel region";
      EXPECT_EQ(inside[1], by_threads[1]) << "inside a parallel region";
      expect_product(by_threads[1], c0, beta, M, N, K, ldc, a.data(), lda,
                     [&, ldb = ldb](int64_t q, int64_t j) { return w[j * ldb + q]; });
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  if (simd::kernels(simd::Isa::kAvx512) != nullptr && std::getenv("ONEDNN_MAX_CPU_ISA") == nullptr &&
      std::getenv("DNNL_MAX_CPU_ISA") == nullptr)
    EXPECT_EQ(taken, 3) << "oneDNN has its brgemm matmul on AVX-512 CPUs (for dense A and C: oneDNN 2.6 runs "
                           "strided ones with another kernel, and they stay with sgemm)";
}

// The lanes product (simd::lanes_gemm) on every instruction set that has it:
// both weight orientations, row strides other than the widths, a partial last
// column block, 1 to `lanes` rows (and more with AVX-512); against a double
// product, columns past N untouched, and the same bits on 1, 2 and 3 threads.
TEST(RnnKernels, LanesGemmMatchesReference) {
  UniformFloats uni(93);
  const auto fill = [&](std::vector<float>& v) { uni.fill(v); };
  int isas = 0;
  for (simd::Isa isa : available_isas()) {
    const simd::Kernels* kern = simd::kernels(isa);
    if (kern == nullptr) continue;
    ++isas;
    const int64_t L = kern->lanes;
    // The AVX-512 kernels take any row count (passes of up to 8 rows).
    std::vector<int64_t> rows = {1, L / 2 + 1, L - 1, L};
    if (isa == simd::Isa::kAvx512) rows.insert(rows.end(), {L + 1, 40});
    for (const auto& [N, K] : {std::pair<int64_t, int64_t>{37, 53}, {16, 1}, {80, 300}})
      for (int64_t M : rows)
        for (bool w_is_kn : {false, true}) {
          SCOPED_TRACE(::testing::Message() << simd::isa_name(isa) << " M=" << M << " N=" << N << " K=" << K
                                            << " w_is_kn=" << w_is_kn);
          const int64_t lda = K + 5, ldc = N + 7, ldw = w_is_kn ? N + 3 : K;
          std::vector<float> w(static_cast<size_t>(w_is_kn ? K * ldw : N * K)), a(static_cast<size_t>(M * lda)),
              c0(static_cast<size_t>(M * ldc));
          fill(w), fill(a), fill(c0);
          std::vector<float> packed(static_cast<size_t>(simd::lanes_packed_size(N, K)), static_cast<float>(kNaN));
          simd::pack_lanes(N, K, w.data(), ldw, w_is_kn, packed.data(), 2);
          std::vector<float> c_by_threads[3];
          for (int threads = 1; threads <= 3; ++threads) {
            std::vector<float>& c = c_by_threads[threads - 1];
            c = c0;
            kern->lanes_gemm(simd::LanesGemm{M, N, K, a.data(), lda, packed.data(), c.data(), ldc, threads});
          }
          EXPECT_EQ(c_by_threads[0], c_by_threads[1]);
          EXPECT_EQ(c_by_threads[0], c_by_threads[2]);
          expect_product(c_by_threads[1], c0, 1.0, M, N, K, ldc, a.data(), lda,
                         [&, K = K, w_is_kn = w_is_kn](int64_t q, int64_t j) {
                           return w_is_kn ? w[q * ldw + j] : w[j * K + q];
                         });
          if (::testing::Test::HasFatalFailure()) return;
        }
  }
  if (isas == 0) GTEST_SKIP() << "no vector kernels on this CPU";
  // A row stride past the gather's 32-bit offsets (rows 2^31 + 3 floats apart,
  // 8 GiB of address space reserved, only the rows' own pages touched): the
  // AVX2 kernels' transposed copy is made without gathers (the AVX-512 ones
  // read the rows of A where they are).
  const int64_t M = 2, N = 17, K = 20, lda = (int64_t{1} << 31) + 3;
  const size_t bytes = static_cast<size_t>((M - 1) * lda + K) * sizeof(float);
  void* span = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(span, MAP_FAILED) << "could not reserve " << bytes << " bytes of address space";
  const std::unique_ptr<void, std::function<void(void*)>> unmap(span, [bytes](void* p) { munmap(p, bytes); });
  float* a = static_cast<float*>(span);
  std::vector<float> w(static_cast<size_t>(N * K)), c(static_cast<size_t>(M * N), 0.0f);
  fill(w);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t q = 0; q < K; ++q) a[i * lda + q] = uni();
  std::vector<float> packed(static_cast<size_t>(simd::lanes_packed_size(N, K)));
  simd::pack_lanes(N, K, w.data(), K, false, packed.data(), 1);
  // Every vector instruction set the CPU has (not only the active one, which
  // RNNKIT_ISA may have set to scalar).
  for (simd::Isa isa : available_isas()) {
    const simd::Kernels* kern = simd::kernels(isa);
    if (kern == nullptr) continue;
    SCOPED_TRACE(simd::isa_name(isa));
    std::fill(c.begin(), c.end(), 0.0f);
    kern->lanes_gemm(simd::LanesGemm{M, N, K, a, lda, packed.data(), c.data(), N, 2});
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double sum = 0.0;
        for (int64_t q = 0; q < K; ++q) sum += double(a[i * lda + q]) * w[j * K + q];
        ASSERT_NEAR(c[i * N + j], sum, 1e-5 * K) << "row " << i << " column " << j << " (large lda)";
      }
  }
}

// Whole layers on the rows-in-lanes path (batches of 14-16 rows, W_hh above the
// size threshold, here lowered so that small layers reach it): forward against
// the reference, gradients by directional derivative, the backward's per-step
// products included (overwrite_forward_workspace with rows >= 2H), and the same
// bits on 1 and more threads for the forward and for dh0, which comes from the
// per-step products alone (dx and the weight gradients also take oneDNN's
// sgemm, whose rounding may depend on the thread count).
TEST(RnnKernels, LanesPathLayers) {
  const simd::Kernels* kern = simd::active_kernels();
  ASSERT_NE(kern, nullptr) << "these tests need a CPU with AVX2 or AVX-512";
  ASSERT_EQ(kern->lanes, 16) << "lanes_gemm takes 16 rows on every instruction set";
  const LanesThresholdScope any_size(0);
  struct Case {
    CellType cell;
    int64_t H, P, N, T;
    bool reverse, avx2;
  };
  // With the AVX-512 kernels, LSTM and GRU batches up to 32 without a
  // projection take the small-batch path instead (rnn.cpp, small_batch_path):
  // those cases run on the AVX2 kernels, where they keep this path; the others
  // on the best instruction set.
  const Case cases[] = {Case{CellType::LSTM, 136, 0, 16, 20, false, true},
                        Case{CellType::GRU, 152, 0, 16, 21, true, true},
                        Case{CellType::RNN_TANH, 280, 0, 15, 6, false, false},
                        Case{CellType::RNN_RELU, 264, 0, 16, 5, true, false},
                        Case{CellType::LSTM, 40, 24, 14, 5, true, false}};
  uint64_t seed = 950;
  for (const Case& cs : cases) {
    const IsaScope isa_scope(cs.avx2 ? simd::Isa::kAvx2 : simd::active_isa());
    // The layers' other products are oneDNN sgemm calls, which on 3 threads may
    // split some shapes along K (AVX2: 1 and 3 threads differed in the last
    // bits here); the lanes product itself does not depend on the count.
    const int more_threads = simd::active_isa() == simd::Isa::kAvx512 ? 3 : 2;
    Config c = random_config(cs.cell, ++seed);
    c.I = 24, c.H = cs.H, c.P = cs.P, c.N = cs.N, c.T = cs.T;
    c.batch_sizes.assign(static_cast<size_t>(c.T), c.N);
    // The last steps shrink (packed sequences), so products of fewer rows occur.
    const int64_t tail[] = {c.N - 1, c.N - 2, c.N / 2 + 1, 3};
    for (int64_t i = 0; i < 4 && i < c.T - 1; ++i) c.batch_sizes[c.T - 4 + i] = tail[i];
    c.reverse = cs.reverse;
    c.overwrite = true;
    c.weight_scale = 0.1;
    SCOPED_TRACE(c.describe());
    ASSERT_STREQ(k::tuning::forward_path(c.dims()), "lanes");
    check_large(c);
    const Problem p = random_problem(c);
    const KernelOutputs one = run_float_kernel_on(1, c, p), more = run_float_kernel_on(more_threads, c, p);
    EXPECT_EQ(one.y, more.y);
    EXPECT_EQ(one.h_n, more.h_n);
    // With a projection, dh0 also takes the per-step sgemm calls through W_hr.
    if (cs.P == 0) EXPECT_EQ(one.dh0, more.dh0);
  }
}

// Batches of 16 on the per-step GEMM paths (oneDNN's packed matmul, and the
// rows-in-lanes product) with an initial state, padded and packed, forward and
// reverse: the forward gives the same bits on 1 and 2 threads. (The rows
// starting from h0 once went to sgemm, which splits some of these shapes along
// K on two threads: Elman H = 1280 differed in the last bits.) The backward's
// whole-sequence products are oneDNN sgemm calls, whose rounding may depend on
// the thread count, so only the forward is held to this.
TEST(RnnKernels, GemmPathsForwardDoesNotDependOnThreadCount) {
  if (simd::active_kernels() == nullptr) GTEST_SKIP() << "no vector kernels on this CPU";
  uint64_t seed = 970;
  for (int64_t lanes_min : {int64_t{1} << 40, int64_t{0}}) {
    const LanesThresholdScope threshold(lanes_min);
    for (CellType cell : {CellType::RNN_TANH, CellType::LSTM, CellType::GRU})
      for (bool reverse : {false, true}) {
        Config c = random_config(cell, ++seed);
        // LSTM and GRU batches up to 32 take the small-batch path with the
        // AVX-512 kernels (rnn.cpp, small_batch_path): theirs are of 40.
        const bool elman = cell == CellType::RNN_TANH;
        c.I = 7, c.H = elman ? 1280 : 320, c.P = 0, c.N = elman ? 16 : 40, c.T = 4;
        c.batch_sizes = {c.N, c.N, c.N - 6, 4};
        c.use_h0 = true;
        c.reverse = reverse;
        c.overwrite = true;
        c.weight_scale = 0.05;
        SCOPED_TRACE(c.describe() + " path " + k::tuning::forward_path(c.dims()));
        expect_forward_same_on(2, c, random_problem(c));
      }
  }
}

// The GEMM path's per-step products through the dense stage (where oneDNN's
// matmul would not take strided gates rows in place: LSTM rows padded to
// 4H + 16, every GRU, an Elman layer writing into a wider y): the same bits as
// packed_gemm's own copies (tuning::set_stage_step_products(false)) for the
// forward and every gradient, with an initial state, shrinking batches (steps
// whose products do not take the stage) and the backward's per-step products
// (overwrite_forward_workspace with rows >= 2H), on two threads, whose
// pointwise passes split the rows into column slices; and against the double
// reference. Batches of 72 LSTM and GRU rows (above the 64 to which the AVX-512
// kernels take the lanes product for small layers), and the Elman layer on the
// AVX2 kernels (with AVX-512 every Elman layer off the small-batch path takes
// the lanes product). Also batches of 20 LSTM and GRU rows, whose forward takes
// the small-batch path with the AVX-512 kernels while their backward walks the
// GEMM path, with the stage the training forward keeps for it.
TEST(RnnKernels, GemmPathStagedProductsSameBits) {
  struct StageScope {
    explicit StageScope(bool stage) { k::tuning::set_stage_step_products(stage); }
    ~StageScope() { k::tuning::set_stage_step_products(true); }
  };
  struct Shape {
    CellType cell;
    int64_t N;
    bool avx2;
  };
  uint64_t seed = 990;
  const bool have_avx2 = simd::kernels(simd::Isa::kAvx2) != nullptr;
  for (const Shape& shape : {Shape{CellType::LSTM, 72, false}, Shape{CellType::GRU, 72, false},
                             Shape{CellType::RNN_TANH, 40, true}, Shape{CellType::LSTM, 20, false},
                             Shape{CellType::GRU, 20, false}})
    for (bool reverse : {false, true}) {
      const CellType cell = shape.cell;
      const int64_t N = shape.N;
      const IsaScope isa(shape.avx2 && have_avx2 ? simd::Isa::kAvx2 : simd::active_isa());
      Config c = random_config(cell, ++seed);
      c.I = 9, c.H = 128, c.P = 0, c.N = N, c.T = std::max<int64_t>(5, 320 / N);
      c.batch_sizes.assign(static_cast<size_t>(c.T), N);
      c.batch_sizes[c.T - 2] = N - 7, c.batch_sizes[c.T - 1] = 7;
      c.use_h0 = true;
      c.reverse = reverse;
      c.overwrite = true;
      if (cell == CellType::RNN_TANH) c.ldy_pad = 5;
      c.weight_scale = 0.1;
      SCOPED_TRACE(c.describe() + " path " + k::tuning::forward_path(c.dims()));
      if (N >= 40) ASSERT_STREQ(k::tuning::forward_path(c.dims()), "gemm");
      ASSERT_GE(c.rows(), 2 * c.H) << "the backward's per-step products are packed from 2H rows";
      check_large(c);
      const Problem p = random_problem(c);
      const KernelOutputs staged = run_float_kernel_on(2, c, p);
      const StageScope off(false);
      expect_same_bits(staged, run_float_kernel_on(2, c, p));
      if (::testing::Test::HasFailure()) return;
    }
}

// Which batches and sizes take the lanes path by default: with the AVX-512
// kernels every Elman layer off the small-batch path, and LSTM and GRU layers
// with W_hh up to 1 MiB and batches up to 64; otherwise (the AVX2 kernels, the
// projected LSTM) 14-16 rows against a W_hh larger than 1.5x the cores' L2
// (6 MiB with 2 MiB per core on 2 cores).
TEST(RnnKernels, LanesPathRule) {
  ASSERT_NE(simd::active_kernels(), nullptr) << "these tests need a CPU with AVX2 or AVX-512";
  const auto path = [](CellType cell, int64_t H, int64_t N, int64_t P = 0) {
    Config c;
    c.cell = cell, c.I = H, c.H = H, c.P = P, c.N = N, c.T = 2;
    c.batch_sizes = {N, N};
    return std::string(k::tuning::forward_path(c.dims()));
  };
  const int64_t threshold = k::tuning::default_lanes_min_weights();
  ASSERT_GT(threshold, 0);
  // Elman layers just above and just below the threshold (W_hh is H^2 floats).
  int64_t above = 1;
  while (above * above < threshold) ++above;
  const int64_t below = above - 2;
  for (simd::Isa isa : available_isas()) {
    if (isa == simd::Isa::kScalar) continue;
    const IsaScope scope(isa);
    SCOPED_TRACE(simd::isa_name(isa));
    const bool any_rows = isa == simd::Isa::kAvx512;
    EXPECT_EQ(path(CellType::RNN_RELU, above, 16), "lanes");
    EXPECT_EQ(path(CellType::RNN_RELU, above, 14), "lanes");
    EXPECT_EQ(path(CellType::RNN_RELU, below, 16), any_rows ? "lanes" : "gemm");  // W_hh fits the cores' L2
    EXPECT_EQ(path(CellType::RNN_RELU, above, 13), any_rows ? "lanes" : "gemm");  // too few rows for the lanes
    EXPECT_EQ(path(CellType::RNN_RELU, above, 17), any_rows ? "lanes" : "gemm");
    EXPECT_EQ(path(CellType::RNN_TANH, 64, 200), any_rows ? "lanes" : "gemm");
    EXPECT_EQ(path(CellType::RNN_RELU, above, 8), "small-batch");
    EXPECT_EQ(path(CellType::LSTM, 128, 16), "small-batch");
    // LSTM 256 and GRU 256: W_hh of 1 MiB and 768 KiB.
    for (CellType cell : {CellType::LSTM, CellType::GRU}) {
      EXPECT_EQ(path(cell, 256, 64), any_rows ? "lanes" : "gemm");
      EXPECT_EQ(path(cell, 256, 40), any_rows ? "lanes" : "gemm");
      EXPECT_EQ(path(cell, 256, 65), "gemm");
      EXPECT_EQ(path(cell, 320, 64), "gemm");
    }
    // The projected LSTM keeps the 14-16 rows rule.
    EXPECT_EQ(path(CellType::LSTM, 64, 16, 32), "gemm");
    const LanesThresholdScope any_size(0);
    EXPECT_EQ(path(CellType::LSTM, 64, 16, 32), "lanes");
    EXPECT_EQ(path(CellType::LSTM, 64, 17, 32), "gemm");
  }
}

// Which batches take the small-batch forward on each instruction set with
// vector kernels: up to 8 rows always; LSTM and GRU batches up to 32 of any
// size with the AVX-512 kernels; otherwise up to 32 rows when
// N * G * H^2 <= 2^20 (rnn.cpp, small_batch_path); an LSTM with a projection
// up to 8 rows from 2 steps.
// And the small-batch backward: up to 4 rows; up to 8 while W_hh is below
// 2 MiB; and with the AVX-512 kernels batches on the small-batch forward up to
// 2^22 multiply-adds a step.
TEST(RnnKernels, SmallBatchPathRule) {
  const auto config = [](CellType cell, int64_t H, int64_t N, int64_t P) {
    Config c;
    c.cell = cell, c.I = H, c.H = H, c.P = P, c.N = N, c.T = 2;
    c.batch_sizes = {N, N};
    return c;
  };
  const auto path = [&](CellType cell, int64_t H, int64_t N, int64_t P = 0) {
    return std::string(k::tuning::forward_path(config(cell, H, N, P).dims()));
  };
  const auto backward = [&](CellType cell, int64_t H, int64_t N, int64_t P = 0) {
    return std::string(k::tuning::backward_path(config(cell, H, N, P).dims()));
  };
  for (simd::Isa isa : available_isas()) {
    const IsaScope scope(isa);
    SCOPED_TRACE(simd::isa_name(isa));
    if (isa == simd::Isa::kScalar) {  // no vector kernels: every batch on the GEMM path
      EXPECT_EQ(path(CellType::LSTM, 64, 1), "gemm");
      EXPECT_EQ(backward(CellType::LSTM, 64, 1), "gemm");
      continue;
    }
    const bool wide = isa == simd::Isa::kAvx512;
    for (CellType cell : {CellType::LSTM, CellType::GRU}) {
      EXPECT_EQ(path(cell, 1024, 8), "small-batch");
      EXPECT_EQ(path(cell, 1024, 32) == "small-batch", wide);
      EXPECT_EQ(path(cell, 256, 12) == "small-batch", wide);
      EXPECT_EQ(path(cell, 1024, 33), "gemm");
      EXPECT_EQ(path(cell, 64, 32), "small-batch");  // 32 * G * 64^2 <= 2^20
      // The backward: up to 4 rows; up to 8 below 2 MiB of W_hh; and with
      // AVX-512 up to 2^22 multiply-adds a step.
      EXPECT_EQ(backward(cell, 1024, 4), "small-batch");
      EXPECT_EQ(backward(cell, 1024, 5), "gemm");
      EXPECT_EQ(backward(cell, 512, 8), "gemm");  // 3-4 MiB
      EXPECT_EQ(backward(cell, 256, 8), "small-batch");  // 0.75-1 MiB
      EXPECT_EQ(backward(cell, 64, 32) == "small-batch", wide);
      EXPECT_EQ(backward(cell, 128, 32) == "small-batch", wide);  // 32 * 4 * 128^2 = 2^21
      EXPECT_EQ(backward(cell, 512, 16), "gemm");
    }
    EXPECT_EQ(path(CellType::RNN_TANH, 128, 32), "small-batch");  // 32 * 128^2 = 2^19
    EXPECT_EQ(backward(CellType::RNN_TANH, 128, 32) == "small-batch", wide);
    EXPECT_EQ(path(CellType::RNN_TANH, 256, 32), wide ? "lanes" : "gemm");
    EXPECT_EQ(backward(CellType::RNN_TANH, 256, 32), "gemm");
    // An LSTM with a projection takes the small-batch forward (with its second
    // product per step) up to 8 rows; its backward stays on the GEMM path.
    EXPECT_EQ(path(CellType::LSTM, 256, 4, 64), "small-batch");
    EXPECT_EQ(path(CellType::LSTM, 1024, 8, 256), "small-batch");
    EXPECT_NE(path(CellType::LSTM, 256, 9, 64), "small-batch");
    EXPECT_NE(path(CellType::LSTM, 64, 16, 32), "small-batch");
    EXPECT_EQ(backward(CellType::LSTM, 256, 4, 64), "gemm");
    // It takes W_hh and W_hr packed by the caller (ProjectionPathPackedWeights).
    EXPECT_GT(k::rnn_packed_weights_size(config(CellType::LSTM, 256, 4, 64).dims()), 0u);
    EXPECT_GT(k::rnn_packed_projection_weights_size(config(CellType::LSTM, 256, 4, 64).dims()), 0u);
    EXPECT_EQ(k::rnn_packed_projection_weights_size(config(CellType::LSTM, 256, 9, 64).dims()), 0u);
    Config one_step = config(CellType::LSTM, 256, 4, 64);  // a decoder's call per token
    one_step.T = 1;
    one_step.batch_sizes = {4};
    EXPECT_STREQ(k::tuning::forward_path(one_step.dims()), "gemm");
  }
}

// The weight-gradient product C = alpha A^T op(B) + beta C, which gemm routes
// through oneDNN's matmul in 512-row steps for tall, narrow shapes (M >= 1024,
// N <= 512; AVX-512) and, where A's row stride is a multiple of 256 floats,
// through row-padded copies of A in 512-row steps (M >= 512, 128 <= N <= 512,
// K >= 1024): the rows beyond the last whole step, strided operands, B
// transposed, beta 0 (C's old values, NaN here, ignored) and other shapes.
TEST(RnnKernels, GemmTransposedAccumulate) {
  std::mt19937_64 rng(92);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  struct Shape {
    int64_t M, N, K, pad_a, pad_b, pad_c;
    float alpha = 1.0f, beta = 1.0f;
    bool trans_b = false;
  };
  for (const Shape& sh : {Shape{1024, 40, 1100, 0, 0, 0}, Shape{1536, 64, 512, 8, 3, 5},
                          Shape{1100, 512, 600, 0, 16, 0}, Shape{1024, 513, 520, 0, 0, 0},
                          Shape{512, 40, 1100, 0, 0, 0}, Shape{1024, 128, 1100, 0, 0, 0},
                          Shape{512, 200, 1300, 512, 0, 3, 0.5f, 0.25f, true},
                          Shape{768, 256, 1024, 0, 7, 0, 1.5f, 0.0f, false},
                          Shape{1024, 384, 1100, 0, 0, 0, 1.0f, 0.0f, true},
                          // beta = 0 on the weight-gradient matmul's shapes (a gradient
                          // written, not accumulated: RnnGrads::overwrite), which it zeroes first
                          Shape{1024, 40, 1100, 0, 0, 0, 1.0f, 0.0f, false},
                          Shape{1024, 200, 600, 0, 0, 0, 1.0f, 0.0f, false}}) {
    SCOPED_TRACE(::testing::Message() << "M=" << sh.M << " N=" << sh.N << " K=" << sh.K << " lda="
                                      << sh.M + sh.pad_a << " trans_b=" << sh.trans_b);
    const int64_t lda = sh.M + sh.pad_a, ldc = sh.N + sh.pad_c;
    const int64_t ldb = (sh.trans_b ? sh.K : sh.N) + sh.pad_b;
    std::vector<float> a(static_cast<size_t>(sh.K * lda)),
        b(static_cast<size_t>((sh.trans_b ? sh.N : sh.K) * ldb)), c(static_cast<size_t>(sh.M * ldc));
    for (auto* v : {&a, &b, &c})
      for (float& e : *v) e = uni(rng);
    std::vector<double> ref(c.size()), bound(c.size());
    for (size_t i = 0; i < c.size(); ++i) ref[i] = sh.beta == 0.0f ? 0.0 : double(sh.beta) * c[i];
    for (int64_t i = 0; i < sh.M; ++i)
      for (int64_t k = 0; k < sh.K; ++k) {
        const double av = double(sh.alpha) * a[k * lda + i];
        for (int64_t j = 0; j < sh.N; ++j) {
          const double bv = sh.trans_b ? b[j * ldb + k] : b[k * ldb + j];
          ref[i * ldc + j] += av * bv;
          bound[i * ldc + j] += std::abs(av * bv);
        }
      }
    if (sh.beta == 0.0f)
      for (int64_t i = 0; i < sh.M; ++i)
        for (int64_t j = 0; j < sh.N; ++j) c[i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> before = c;
    k::gemm(true, sh.trans_b, sh.M, sh.N, sh.K, sh.alpha, a.data(), lda, b.data(), ldb, sh.beta, c.data(), ldc);
    for (int64_t i = 0; i < sh.M; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t at = static_cast<size_t>(i * ldc + j);
        if (j >= sh.N) {
          ASSERT_EQ(c[at], before[at]) << "column " << j << " beyond N was written";
          continue;
        }
        // float32 sums: a few units of rounding of the sum of magnitudes.
        ASSERT_NEAR(c[at], ref[at], 4e-7 * (bound[at] + std::abs(ref[at]) + 1.0) * std::sqrt(double(sh.K)))
            << "row " << i << " column " << j;
      }
  }
}

// Packed weights carry their cell, size and precision; bfloat16 ones serve
// inference only and stay within bfloat16's rounding of the float result.
TEST(RnnKernels, PackedWeightsBf16AndChecks) {
  // On every instruction set; 13 rows take passes of 4, 4, 4 and 1 rows.
  for (simd::Isa isa : available_isas())
  for (int64_t N : {3, 13})
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH}) {
    const IsaScope scope(isa);
    Config c = random_config(cell, 515 + N);
    c.I = 12, c.H = 37, c.P = 0, c.N = N, c.T = 9;
    c.separate_scratch = false;
    c.batch_sizes.assign(9, N);
    c.weight_scale = 0.3;
    SCOPED_TRACE(c.describe() + " on " + simd::isa_name(isa));
    const Problem p = random_problem(c);
    const RnnLayerDims d = c.dims();
    const std::vector<float> w_ih(p.w_ih.begin(), p.w_ih.end()), w_hh(p.w_hh.begin(), p.w_hh.end()),
        b_ih(p.b_ih.begin(), p.b_ih.end()), b_hh(p.b_hh.begin(), p.b_hh.end()),
        x(p.x.begin(), p.x.end());
    RnnWeights<float> w;
    w.w_ih = w_ih.data();
    w.w_hh = w_hh.data();
    w.b_ih = b_ih.data();
    w.b_hh = b_hh.data();
    const int64_t rows = c.rows(), H = c.H;
    std::vector<float> ws(k::rnn_forward_workspace_size(d, true)), y32(rows * H), y16(rows * H);
    k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y32.data(), H, nullptr, nullptr,
                          ws.data(), false);
    std::vector<float> packed(k::rnn_packed_weights_size(d, k::PackedPrecision::kBFloat16));
    ASSERT_FALSE(packed.empty());
    EXPECT_LT(packed.size(), k::rnn_packed_weights_size(d));
    k::rnn_pack_weights(d, w_hh.data(), packed.data(), k::PackedPrecision::kBFloat16);
    w.w_hh_packed = packed.data();
    k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y16.data(), H, nullptr, nullptr,
                          ws.data(), false);
    double max_err = 0;
    for (size_t i = 0; i < y32.size(); ++i) max_err = std::max(max_err, double(std::abs(y16[i] - y32[i])));
    if (simd::active_kernels() != nullptr) {
      EXPECT_GT(max_err, 0.0) << "bfloat16 weights were not used";
      // The same forward in float from W_hh rounded to bfloat16 (to nearest
      // even) agrees to float rounding: only the order of the sums differs.
      std::vector<float> w_round(w_hh.size()), y_round(rows * H);
      for (size_t i = 0; i < w_hh.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &w_hh[i], sizeof bits);
        bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
        std::memcpy(&w_round[i], &bits, sizeof bits);
      }
      RnnWeights<float> wr = w;
      wr.w_hh = w_round.data();
      wr.w_hh_packed = nullptr;
      k::rnn_forward<float>(d, wr, x.data(), c.I, nullptr, nullptr, y_round.data(), H, nullptr, nullptr,
                            ws.data(), false);
      double max_diff = 0;
      for (size_t i = 0; i < y16.size(); ++i) max_diff = std::max(max_diff, double(std::abs(y16[i] - y_round[i])));
      EXPECT_LT(max_diff, 1e-5) << "bfloat16 forward against float on the rounded weights";
    }
    EXPECT_LT(max_err, 2e-2);
    // Training with bfloat16 weights, or weights packed for another size, is refused.
    EXPECT_THROW(k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y16.data(), H, nullptr,
                                       nullptr, ws.data(), true),
                 rnnkit::Error);
    // dims.separate_scratch needs the overload that takes the scratch buffer.
    RnnLayerDims separate = d;
    separate.separate_scratch = true;
    ASSERT_GT(k::rnn_forward_scratch_size(separate), 0u);
    EXPECT_THROW(k::rnn_forward<float>(separate, w, x.data(), c.I, nullptr, nullptr, y16.data(), H,
                                       nullptr, nullptr, ws.data(), false),
                 rnnkit::Error);
    Config other = c;
    other.H = 36;
    std::vector<float> packed_other(k::rnn_packed_weights_size(other.dims()));
    std::vector<float> w_other(c.G() * 36 * 36, 0.f);
    k::rnn_pack_weights(other.dims(), w_other.data(), packed_other.data());
    w.w_hh_packed = packed_other.data();
    if (simd::active_kernels() != nullptr)
      EXPECT_THROW(k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y16.data(), H,
                                         nullptr, nullptr, ws.data(), false),
                   rnnkit::Error);
  }
}

TEST(RnnKernels, ThreadCountSetting) {
  const int before = rnnkit::get_num_threads();
  EXPECT_GE(before, 1);
  rnnkit::set_num_threads(3);
  EXPECT_EQ(rnnkit::get_num_threads(), 3);
  rnnkit::set_num_threads(0);  // back to the default
  EXPECT_GE(rnnkit::get_num_threads(), 1);
  EXPECT_THROW(rnnkit::set_num_threads(-1), rnnkit::Error);
  rnnkit::set_num_threads(before);
}

// ---------------------------------------------------------------------------
// Vectorised exp / sigmoid / tanh against the C library (double, rounded to
// float) on a sweep of the whole float range: every 251st bit pattern, which
// visits every binade, plus the special values. The error is in ulp of the
// correctly rounded result (subnormals included); docs/PERFORMANCE.md quotes the
// exhaustive figure from bench/bench_activations.

int64_t ordered(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i >= 0 ? int64_t(i) : int64_t(INT32_MIN) - int64_t(i);
}

float exp_ref(float x) { return static_cast<float>(std::exp(static_cast<double>(x))); }
float sigmoid_ref(float x) { return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x)))); }
float tanh_ref(float x) { return static_cast<float>(std::tanh(static_cast<double>(x))); }

struct ActivationError {
  int64_t max_ulp = 0;
  float worst_x = 0;
  int64_t nan_mismatches = 0;
};

ActivationError activation_error(simd::ArrayFn fn, float (*ref)(float)) {
  ActivationError e;
  std::vector<float> x, y;
  auto run = [&] {
    y.resize(x.size());
    fn(static_cast<int64_t>(x.size()), x.data(), y.data());
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = ref(x[i]);
      if (std::isnan(want) || std::isnan(y[i])) {
        e.nan_mismatches += std::isnan(want) != std::isnan(y[i]);
        continue;
      }
      const int64_t ulp = std::abs(ordered(y[i]) - ordered(want));
      if (ulp > e.max_ulp) {
        e.max_ulp = ulp;
        e.worst_x = x[i];
      }
    }
    x.clear();
  };
  const float specials[] = {0.f, -0.f, 1e-45f, -1e-45f, 1e-38f, 0.625f, -0.625f, 0.6249999f,
                            88.72f, 88.8f, -87.3f, -103.9f, -104.f, 9.01f, -9.01f, 1e30f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()};
  x.assign(std::begin(specials), std::end(specials));
  run();
  for (uint64_t bits = 0; bits < (uint64_t(1) << 32); bits += 251) {
    const uint32_t b32 = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b32, sizeof f);
    x.push_back(f);
    if (x.size() == 1 << 16) run();
  }
  run();
  return e;
}

TEST(RnnKernels, ActivationsMatchCLibrary) {
  for (simd::Isa isa : available_isas()) {
    const simd::Kernels* kern = simd::kernels(isa);
    if (kern == nullptr) continue;
    SCOPED_TRACE(simd::isa_name(isa));
    const std::pair<const char*, std::pair<simd::ArrayFn, float (*)(float)>> fns[] = {
        {"exp", {kern->exp, &exp_ref}},
        {"sigmoid", {kern->sigmoid, &sigmoid_ref}},
        {"tanh", {kern->tanh, &tanh_ref}}};
    for (const auto& [name, f] : fns) {
      const ActivationError e = activation_error(f.first, f.second);
      std::cout << "  " << simd::isa_name(isa) << " " << name << ": max " << e.max_ulp
                << " ulp (at x = " << e.worst_x << ")\n";
      EXPECT_LE(e.max_ulp, 3) << name << " worst at x = " << e.worst_x;
      EXPECT_EQ(e.nan_mismatches, 0) << name << ": NaN in one result and not in the other";
    }
  }
}

// The vectorised pointwise passes evaluate several vectors' activations
// interleaved (whole groups of vectors, then pairs, then single and partial
// vectors): a unit's results must not depend on which of these it fell into.
// Each row is computed whole and unit by unit (a one-lane partial vector), and
// every output must agree bit for bit, forward (inference and training) and
// backward, for every cell and lengths that reach each kind of group.
TEST(RnnKernels, PointwiseDoesNotDependOnPosition) {
  const int64_t lengths[] = {1, 7, 16, 59, 115, 203};
  const CellType cells[] = {CellType::RNN_TANH, CellType::RNN_RELU, CellType::LSTM, CellType::GRU};
  for (simd::Isa isa : available_isas()) {
    const simd::Kernels* kern = simd::kernels(isa);
    if (kern == nullptr) continue;  // scalar: one loop, no vectors to group
    SCOPED_TRACE(simd::isa_name(isa));
    for (CellType cell : cells) {
      for (int64_t H : lengths) {
        SCOPED_TRACE(testing::Message() << "cell " << int(cell) << " H " << H);
        std::mt19937 rng(static_cast<uint32_t>(H * 7 + int(cell)));
        // Pre-activations up to +-12 reach both branches of tanh and the
        // saturated ends of sigmoid.
        std::uniform_real_distribution<float> wide(-12.0f, 12.0f), unit(-1.0f, 1.0f);
        const auto fill = [&](size_t n, std::uniform_real_distribution<float>& d) {
          std::vector<float> v(n);
          for (float& x : v) x = d(rng);
          return v;
        };
        const std::vector<float> gates0 = fill(4 * H, wide), bias = fill(4 * H, unit), h_prev = fill(H, unit),
                                 c_prev = fill(H, wide), dh_a = fill(H, unit), dh_b = fill(H, unit),
                                 dc0 = fill(H, unit);
        for (bool training : {false, true}) {
          std::vector<float> g_all = gates0, c_all(H), h_all(H);
          std::vector<float> g_one = gates0, c_one(H), h_one(H);
          kern->forward[int(cell)](H, H, g_all.data(), bias.data(), h_prev.data(), c_prev.data(), c_all.data(),
                                   h_all.data(), training);
          for (int64_t j = 0; j < H; ++j)
            kern->forward[int(cell)](1, H, g_one.data() + j, bias.data() + j, h_prev.data() + j,
                                     c_prev.data() + j, c_one.data() + j, h_one.data() + j, training);
          EXPECT_EQ(std::memcmp(h_all.data(), h_one.data(), H * sizeof(float)), 0) << "h";
          if (cell == CellType::LSTM)
            EXPECT_EQ(std::memcmp(c_all.data(), c_one.data(), H * sizeof(float)), 0) << "c";
          if (training)
            EXPECT_EQ(std::memcmp(g_all.data(), g_one.data(), g_all.size() * sizeof(float)), 0) << "gates";
          if (!training) continue;
          // Backward from the training forward's saved gates (and c).
          std::vector<float> dg_all(4 * H), dg_one(4 * H), dd_all(H), dd_one(H);
          std::vector<float> dc_all = dc0, dc_one = dc0;
          kern->backward[int(cell)](H, H, g_all.data(), h_prev.data(), c_prev.data(), c_all.data(), dh_a.data(),
                                    dh_b.data(), dd_all.data(), dc_all.data(), dg_all.data());
          for (int64_t j = 0; j < H; ++j)
            kern->backward[int(cell)](1, H, g_all.data() + j, h_prev.data() + j, c_prev.data() + j,
                                      c_all.data() + j, dh_a.data() + j, dh_b.data() + j, dd_one.data() + j,
                                      dc_one.data() + j, dg_one.data() + j);
          EXPECT_EQ(std::memcmp(dg_all.data(), dg_one.data(), dg_all.size() * sizeof(float)), 0) << "dgates";
          EXPECT_EQ(std::memcmp(dc_all.data(), dc_one.data(), H * sizeof(float)), 0) << "dc";
          if (cell == CellType::GRU)
            EXPECT_EQ(std::memcmp(dd_all.data(), dd_one.data(), H * sizeof(float)), 0) << "dh_direct";
        }
      }
    }
  }
}

TEST(RnnKernels, GateCounts) {
  EXPECT_EQ(k::gate_count(CellType::RNN_TANH), 1);
  EXPECT_EQ(k::gate_count(CellType::RNN_RELU), 1);
  EXPECT_EQ(k::gate_count(CellType::LSTM), 4);
  EXPECT_EQ(k::gate_count(CellType::GRU), 3);
}

}  // namespace

// ---------------------------------------------------------------------------
// The bfloat16 products (PackedPrecision::kBFloat16Products): x, h and both
// weights rounded to bfloat16 (to nearest even) in the two products, the sums,
// the pointwise pass, h, c and the outputs in float.

class Bf16DotHardwareScope {
 public:
  explicit Bf16DotHardwareScope(bool on) { k::tuning::set_bf16_dot_hardware(on); }
  ~Bf16DotHardwareScope() { k::tuning::set_bf16_dot_hardware(true); }
};

double bf16_round(double v) { return k::round_to_bfloat16(static_cast<float>(v)); }

struct Bf16ProductsRun {
  std::vector<double> y, h_n, c_n;
};

// How a run asks for the bfloat16 products: both weights packed in that
// precision by the caller; W_hh only (W_ih packed by the call); or by
// RnnWeights::bf16_products with the weights rounded by the caller and nothing
// packed (the only way off the small-batch path and in float64).
enum class ProductsBy { kPackedBoth, kPackedHh, kFlag };

template <class T>
Bf16ProductsRun run_bf16_products(const Config& c, const Problem& p, ProductsBy by) {
  const RnnLayerDims d = c.dims();
  const auto precision = k::PackedPrecision::kBFloat16Products;
  const auto maybe_rounded = [&](const std::vector<double>& v) {
    std::vector<T> out(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      out[i] = by == ProductsBy::kFlag ? static_cast<T>(bf16_round(v[i])) : static_cast<T>(v[i]);
    return out;
  };
  const std::vector<T> w_ih = maybe_rounded(p.w_ih), w_hh = maybe_rounded(p.w_hh), b_ih = to<T>(p.b_ih),
                       b_hh = to<T>(p.b_hh), w_hr = to<T>(p.w_hr), h0 = to<T>(p.h0), c0 = to<T>(p.c0);
  const int64_t Hout = c.Hout(), ldx = c.I + c.ldx_pad, ldy = Hout + c.ldy_pad;
  const std::vector<T> x = strided<T>(p.x, c.rows(), c.I, ldx, kSentinel);
  RnnWeights<T> w = weights_of(c, w_ih, w_hh, b_ih, b_hh, w_hr);
  std::vector<float> packed, packed_ih;
  if constexpr (std::is_same_v<T, float>) {
    if (by != ProductsBy::kFlag) {
      packed.resize(k::rnn_packed_weights_size(d, precision));
      EXPECT_FALSE(packed.empty());
      k::rnn_pack_weights(d, w_hh.data(), packed.data(), precision);
      w.w_hh_packed = packed.data();
    }
    if (by == ProductsBy::kPackedBoth) {
      packed_ih.resize(k::rnn_packed_input_weights_size(d, precision));
      k::rnn_pack_input_weights(d, w_ih.data(), packed_ih.data(), precision);
      w.w_ih_packed = packed_ih.data();
    }
  }
  w.bf16_products = by == ProductsBy::kFlag;
  std::vector<T> y(static_cast<size_t>(c.rows() * ldy), static_cast<T>(kSentinel));
  std::vector<T> h_n(static_cast<size_t>(c.N * Hout)), c_n(static_cast<size_t>(c.N * c.H));
  std::vector<T> ws(k::rnn_forward_workspace_size(d, false));
  k::rnn_forward<T>(d, w, x.data(), ldx, c.use_h0 ? h0.data() : nullptr, c.is_lstm() && c.use_c0 ? c0.data() : nullptr,
                    y.data(), ldy, h_n.data(), c.is_lstm() ? c_n.data() : nullptr, ws.data(), false);
  Bf16ProductsRun out;
  out.y = unstride(y, c.rows(), Hout, ldy, "y");
  out.h_n = widen(h_n);
  out.c_n = widen(c_n);
  return out;
}

// Checks a run step by step against the equations in double, each step from
// the run's own h of the step before (rounded to bfloat16 for the product, as
// is), so that a rounding that went the other way in float in an earlier step
// cannot carry into later ones: each y must match to `tol`, as must c_n from
// the reference's own cell chain and h_n. Returns the largest difference from
// what the same step gives with h unrounded in the product, which the test
// uses to show that rounding is seen. value(v) is v as the run's dtype holds
// it; W_hr and the biases are not rounded.
template <class T>
double check_bf16_products(const Config& c, const Problem& p, const Bf16ProductsRun& run, double tol) {
  const int64_t I = c.I, H = c.H, G = c.G(), N = c.N, T_ = c.T, P = c.P, Hout = c.Hout();
  const auto rounded = [](const std::vector<double>& v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = bf16_round(v[i]);
    return r;
  };
  const auto as_t = [](const std::vector<double>& v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = static_cast<T>(v[i]);
    return r;
  };
  const std::vector<double> w_ih = rounded(p.w_ih), w_hh = rounded(p.w_hh), x = rounded(p.x);
  const std::vector<double> b_ih = as_t(p.b_ih), b_hh = as_t(p.b_hh), w_hr = as_t(p.w_hr);
  std::vector<int64_t> off(static_cast<size_t>(T_), 0);
  for (int64_t t = 1; t < T_; ++t) off[t] = off[t - 1] + c.batch_sizes[t - 1];
  double worst = 0, unrounded_gap = 0;
  std::vector<double> gi(G * H), gh(G * H), gh_plain(G * H), h_prev(Hout), cell(H), cell_plain(H), m(H),
      m_plain(H);
  for (int64_t b = 0; b < N; ++b) {
    int64_t len = 0;
    while (len < T_ && c.batch_sizes[len] > b) ++len;
    for (int64_t j = 0; j < Hout; ++j) h_prev[j] = c.use_h0 ? static_cast<T>(p.h0[b * Hout + j]) : 0.0;
    for (int64_t j = 0; j < H; ++j) cell[j] = c.use_c0 && c.is_lstm() ? static_cast<T>(p.c0[b * H + j]) : 0.0;
    for (int64_t step = 0; step < len; ++step) {
      const int64_t t = c.reverse ? len - 1 - step : step;
      const double* xt = &x[(off[t] + b) * I];
      for (int64_t r = 0; r < G * H; ++r) {
        double si = c.has_bias ? b_ih[r] : 0.0, sh = c.has_bias ? b_hh[r] : 0.0, sp = sh;
        for (int64_t i = 0; i < I; ++i) si += w_ih[r * I + i] * xt[i];
        for (int64_t j = 0; j < Hout; ++j) {
          sh += w_hh[r * Hout + j] * bf16_round(h_prev[j]);
          sp += w_hh[r * Hout + j] * h_prev[j];
        }
        gi[r] = si;
        gh[r] = sh;
        gh_plain[r] = sp;
      }
      cell_plain = cell;
      // Unit j's new (unprojected) h from the recurrent terms ghv, c advanced in cs.
      const auto step_h = [&](const std::vector<double>& ghv, std::vector<double>& cs, int64_t j) {
        switch (c.cell) {
          case CellType::RNN_TANH: return std::tanh(gi[j] + ghv[j]);
          case CellType::RNN_RELU: return std::max(0.0, gi[j] + ghv[j]);
          case CellType::LSTM: {
            const double in = sigmoid(gi[j] + ghv[j]), forget = sigmoid(gi[H + j] + ghv[H + j]);
            const double g = std::tanh(gi[2 * H + j] + ghv[2 * H + j]), o = sigmoid(gi[3 * H + j] + ghv[3 * H + j]);
            cs[j] = forget * cs[j] + in * g;
            return o * std::tanh(cs[j]);
          }
          case CellType::GRU: {
            const double r = sigmoid(gi[j] + ghv[j]), z = sigmoid(gi[H + j] + ghv[H + j]);
            const double n = std::tanh(gi[2 * H + j] + r * ghv[2 * H + j]);
            return (1.0 - z) * n + z * h_prev[j];
          }
        }
        return 0.0;
      };
      for (int64_t j = 0; j < H; ++j) {
        m[j] = step_h(gh, cell, j);
        m_plain[j] = step_h(gh_plain, cell_plain, j);
      }
      const double* got = &run.y[(off[t] + b) * Hout];
      for (int64_t q = 0; q < Hout; ++q) {
        double want = m[q], plain = m_plain[q];
        if (P > 0) {
          want = plain = 0.0;
          for (int64_t j = 0; j < H; ++j) {
            want += w_hr[q * H + j] * m[j];
            plain += w_hr[q * H + j] * m_plain[j];
          }
        }
        worst = std::max(worst, std::abs(got[q] - want));
        unrounded_gap = std::max(unrounded_gap, std::abs(got[q] - plain));
      }
      for (int64_t q = 0; q < Hout; ++q) h_prev[q] = got[q];  // the run's own h, as the next step takes it
    }
    for (int64_t q = 0; q < Hout; ++q) worst = std::max(worst, std::abs(run.h_n[b * Hout + q] - h_prev[q]));
    if (c.is_lstm())
      for (int64_t j = 0; j < H; ++j) worst = std::max(worst, std::abs(run.c_n[b * H + j] - cell[j]));
  }
  EXPECT_LT(worst, tol) << "bfloat16 products against the step-by-step reference";
  return unrounded_gap;
}

// Rounding h is seen: in nearly every configuration some output differs from
// the same step with h unrounded in the product by far more than the
// reference's tolerance (a few with small or sparse h, a projection to one
// unit say, differ less).
void expect_h_rounding_seen(const std::vector<double>& gaps) {
  ASSERT_FALSE(gaps.empty());
  const auto seen = std::count_if(gaps.begin(), gaps.end(), [](double g) { return g > 5e-5; });
  EXPECT_GE(static_cast<double>(seen), 0.9 * static_cast<double>(gaps.size()))
      << "h does not look rounded in the products";
}

// A random layer for the bfloat16 products: hidden and input sizes odd and
// even, partial last blocks, packed sequences, both directions, with and
// without h0, c0 and biases; N rows, LSTMs with a projection where proj.
Config bf16_products_config(CellType cell, uint64_t seed, int64_t N, bool proj) {
  Config c = random_config(cell, seed);
  std::mt19937_64 rng(seed);
  const auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  c.H = uni(1, 3) == 1 ? uni(2, 20) : uni(17, 70);
  c.P = proj && cell == CellType::LSTM ? uni(1, c.H - 1) : 0;
  c.I = uni(1, 40);
  c.N = N;
  c.T = uni(2, 7);
  std::vector<int64_t> lengths(static_cast<size_t>(c.N), c.T);
  if (uni(0, 1))
    for (size_t b = 1; b < lengths.size(); ++b) lengths[b] = uni(1, c.T);
  std::sort(lengths.begin(), lengths.end(), std::greater<int64_t>());
  c.batch_sizes = batch_sizes_from_lengths(lengths);
  c.weight_scale = 0.5;
  c.separate_scratch = false;
  return c;
}

// Random small-batch layers of every cell (with and without a projection), on
// every vector instruction set, with the AVX512_BF16 dot products and without
// them, the weights packed by the caller (both, or W_hh only) or asked for by
// RnnWeights::bf16_products, on 1 to 3 threads: every step matches the
// equations on the rounded values, and the result does not depend on the
// thread count or on who packed the weights.
TEST(RnnKernels, Bf16ProductsMatchTheRoundedEquations) {
  std::vector<simd::Isa> isas;
  for (simd::Isa isa : available_isas())
    if (simd::kernels(isa) != nullptr) isas.push_back(isa);
  if (isas.empty()) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
  uint64_t seed = 7100;
  std::vector<double> gaps;
  for (simd::Isa isa : isas) {
    IsaScope isa_scope(isa);
    for (bool hardware : {true, false}) {
      if (hardware && !(isa == simd::Isa::kAvx512 && simd::bf16_dot_hardware())) continue;
      Bf16DotHardwareScope dot_scope(hardware);
      for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH, CellType::RNN_RELU}) {
        for (int rep = 0; rep < 6; ++rep) {
          ++seed;
          const Config c = bf16_products_config(cell, seed, 1 + static_cast<int64_t>(seed % 8), rep % 2 == 1);
          SCOPED_TRACE(c.describe() + " on " + simd::isa_name(isa) + (hardware ? " with" : " without") +
                       " the dot instructions");
          const Problem p = random_problem(c);
          ASSERT_GT(k::rnn_packed_weights_size(c.dims(), k::PackedPrecision::kBFloat16Products), 0u);
          Bf16ProductsRun first;
          {
            ThreadsScope threads(1);
            first = run_bf16_products<float>(c, p, ProductsBy::kPackedBoth);
          }
          gaps.push_back(check_bf16_products<float>(c, p, first, 2e-5));
          for (int threads : {2, 3}) {
            ThreadsScope scope(threads);
            SplitScope split(0);
            for (ProductsBy by : {ProductsBy::kPackedBoth, ProductsBy::kPackedHh, ProductsBy::kFlag}) {
              const Bf16ProductsRun again = run_bf16_products<float>(c, p, by);
              EXPECT_EQ(again.y, first.y) << threads << " threads, way " << static_cast<int>(by);
              EXPECT_EQ(again.h_n, first.h_n) << threads << " threads, way " << static_cast<int>(by);
              EXPECT_EQ(again.c_n, first.c_n) << threads << " threads, way " << static_cast<int>(by);
            }
          }
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
  expect_h_rounding_seen(gaps);
}

// RnnWeights::bf16_products off the small-batch path (the GEMM path at large
// batches, on oneDNN's bfloat16 matmul where the CPU runs it and on float
// GEMMs, the rows-in-lanes path, the scalar kernels) and in float64: every
// step matches the equations on the rounded values.
TEST(RnnKernels, Bf16ProductsOnEveryPath) {
  uint64_t seed = 7200;
  std::vector<double> gaps;
  for (CellType cell : {CellType::LSTM, CellType::GRU, CellType::RNN_TANH, CellType::RNN_RELU}) {
    for (int rep = 0; rep < 4; ++rep) {
      ++seed;
      const bool proj = rep % 2 == 1;
      const Config wide = bf16_products_config(cell, seed, 40 + static_cast<int64_t>(seed % 9), proj);
      SCOPED_TRACE(wide.describe());
      const Problem p = random_problem(wide);
      gaps.push_back(check_bf16_products<double>(wide, p, run_bf16_products<double>(wide, p, ProductsBy::kFlag),
                                                 1e-12));
      // On oneDNN's bfloat16 matmul where this CPU runs it, and by the float
      // GEMMs on the rounded values (as on CPUs without AVX512_BF16).
      const int64_t calls = k::bf16_gemm_calls();
      const Bf16ProductsRun on_matmul = run_bf16_products<float>(wide, p, ProductsBy::kFlag);
      // The input projection and a product per step after the first (the
      // first's too with h0).
      if (k::bf16_gemm_available()) EXPECT_GE(k::bf16_gemm_calls() - calls, wide.T);
      gaps.push_back(check_bf16_products<float>(wide, p, on_matmul, 2e-5));
      {
        Bf16DotHardwareScope float_gemms(false);
        const int64_t before = k::bf16_gemm_calls();
        const Bf16ProductsRun on_gemms = run_bf16_products<float>(wide, p, ProductsBy::kFlag);
        EXPECT_EQ(k::bf16_gemm_calls(), before);
        gaps.push_back(check_bf16_products<float>(wide, p, on_gemms, 2e-5));
      }
      {
        IsaScope scalar(simd::Isa::kScalar);
        const Config small = bf16_products_config(cell, seed + 50, 3, proj);
        const Problem ps = random_problem(small);
        gaps.push_back(check_bf16_products<float>(small, ps, run_bf16_products<float>(small, ps, ProductsBy::kFlag),
                                                  2e-5));
      }
      if (simd::active_kernels() != nullptr) {
        // 14-16 rows with the lanes threshold at 0: the rows-in-lanes path where
        // the rules take it (the AVX2 kernels).
        LanesThresholdScope lanes(0);
        Config mid = bf16_products_config(cell, seed + 100, 14 + static_cast<int64_t>(seed % 3), false);
        const Problem pm = random_problem(mid);
        gaps.push_back(
            check_bf16_products<float>(mid, pm, run_bf16_products<float>(mid, pm, ProductsBy::kFlag), 2e-5));
      }
      if (::testing::Test::HasFailure()) return;
    }
  }
  expect_h_rounding_seen(gaps);
}

// Where the bfloat16 products' packings exist and what they refuse: not off
// the small-batch path, not in training; with W_hh packed
// for them W_ih must be too (or not packed), and a W_ih packed for them is
// refused by every other forward.
TEST(RnnKernels, Bf16ProductsPackingRules) {
  if (simd::active_kernels() == nullptr) GTEST_SKIP() << "no vector kernels on this CPU: no small-batch path";
  const auto products = k::PackedPrecision::kBFloat16Products;
  Config c = packed_small_batch_config(CellType::LSTM, 7300, 3, 40);
  c.separate_scratch = false;
  c.has_bias = false;
  const RnnLayerDims d = c.dims();
  ASSERT_GT(k::rnn_packed_weights_size(d, products), 0u);
  EXPECT_EQ(k::rnn_packed_weights_size(d, products), k::rnn_packed_weights_size(d, k::PackedPrecision::kBFloat16));
  EXPECT_GT(k::rnn_packed_input_weights_size(d, products), 0u);
  EXPECT_EQ(k::rnn_packed_input_weights_size(d, k::PackedPrecision::kBFloat16), 0u);
  EXPECT_STREQ(k::packed_precision_name(products), "bfloat16 products");
  Config proj = c;
  proj.P = 7;
  EXPECT_GT(k::rnn_packed_weights_size(proj.dims(), products), 0u);
  EXPECT_GT(k::rnn_packed_input_weights_size(proj.dims(), products), 0u);
  Config wide = c;
  wide.N = 200;
  wide.batch_sizes.assign(static_cast<size_t>(wide.T), wide.N);
  EXPECT_EQ(k::rnn_packed_weights_size(wide.dims(), products), 0u);

  const Problem p = random_problem(c);
  const std::vector<float> w_ih = to<float>(p.w_ih), w_hh = to<float>(p.w_hh), x = to<float>(p.x);
  std::vector<float> hh_products(k::rnn_packed_weights_size(d, products)), hh_float(k::rnn_packed_weights_size(d)),
      ih_products(k::rnn_packed_input_weights_size(d, products)), ih_float(k::rnn_packed_input_weights_size(d));
  k::rnn_pack_weights(d, w_hh.data(), hh_products.data(), products);
  k::rnn_pack_weights(d, w_hh.data(), hh_float.data());
  k::rnn_pack_input_weights(d, w_ih.data(), ih_products.data(), products);
  k::rnn_pack_input_weights(d, w_ih.data(), ih_float.data());
  EXPECT_FALSE(k::rnn_packed_input_weights_fit(d, ih_products.data()));
  EXPECT_TRUE(k::rnn_packed_input_weights_fit(d, ih_products.data(), products));
  EXPECT_FALSE(k::rnn_packed_input_weights_fit(d, ih_float.data(), products));
  EXPECT_TRUE(k::rnn_packed_input_weights_fit(d, ih_float.data()));
  std::vector<float> y(static_cast<size_t>(c.rows() * c.H)), ws(k::rnn_forward_workspace_size(d, true));
  const auto forward = [&](const float* hh, const float* ih, bool training) {
    RnnWeights<float> w;
    w.w_ih = w_ih.data();
    w.w_hh = w_hh.data();
    w.w_hh_packed = hh;
    w.w_ih_packed = ih;
    k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y.data(), c.H, nullptr, nullptr, ws.data(),
                          training);
    return y;
  };
  EXPECT_THROW(forward(hh_products.data(), nullptr, true), rnnkit::Error);
  {
    RnnWeights<float> w;
    w.w_ih = w_ih.data();
    w.w_hh = w_hh.data();
    w.bf16_products = true;
    EXPECT_THROW(k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y.data(), c.H, nullptr, nullptr,
                                       ws.data(), true),
                 rnnkit::Error);
  }
  EXPECT_THROW(forward(hh_products.data(), ih_float.data(), false), rnnkit::Error);
  EXPECT_THROW(forward(hh_float.data(), ih_products.data(), false), rnnkit::Error);
  EXPECT_THROW(forward(nullptr, ih_products.data(), false), rnnkit::Error);
  // W_ih packed by the caller or by the call: the same bits.
  EXPECT_EQ(forward(hh_products.data(), ih_products.data(), false), forward(hh_products.data(), nullptr, false));
  // And not the float32 results.
  EXPECT_NE(forward(hh_products.data(), nullptr, false), forward(hh_float.data(), ih_float.data(), false));
}

// Weights packed for the bfloat16 products in another layout than the call's
// (packed under the AVX-512 kernels, k-major, and run under the AVX2 ones,
// which take several rows gate-major) still ask for the products: the call
// packs W_hh again and takes W_ih as packed (one layout for every instruction
// set), with the results of packing under the AVX2 kernels.
TEST(RnnKernels, Bf16ProductsPackedForAnotherLayout) {
  if (simd::kernels(simd::Isa::kAvx512) == nullptr || simd::kernels(simd::Isa::kAvx2) == nullptr)
    GTEST_SKIP() << "needs a CPU with AVX-512 (whose packing the AVX2 kernels then take)";
  const auto products = k::PackedPrecision::kBFloat16Products;
  for (CellType cell : {CellType::LSTM, CellType::GRU}) {
    Config c = bf16_products_config(cell, 7400 + static_cast<uint64_t>(cell), 3, false);
    SCOPED_TRACE(c.describe());
    const Problem p = random_problem(c);
    const RnnLayerDims d = c.dims();
    const std::vector<float> w_ih = to<float>(p.w_ih), w_hh = to<float>(p.w_hh), b_ih = to<float>(p.b_ih),
                             b_hh = to<float>(p.b_hh), x = to<float>(p.x);
    const auto pack = [&](simd::Isa isa, std::vector<float>& hh, std::vector<float>& ih) {
      IsaScope scope(isa);
      hh.resize(k::rnn_packed_weights_size(d, products));
      ih.resize(k::rnn_packed_input_weights_size(d, products));
      k::rnn_pack_weights(d, w_hh.data(), hh.data(), products);
      k::rnn_pack_input_weights(d, w_ih.data(), ih.data(), products);
    };
    std::vector<float> hh512, ih512, hh2, ih2;
    pack(simd::Isa::kAvx512, hh512, ih512);
    pack(simd::Isa::kAvx2, hh2, ih2);
    IsaScope avx2(simd::Isa::kAvx2);
    ASSERT_FALSE(k::rnn_packed_weights_fit(d, hh512.data())) << "the two layouts should differ here";
    const auto forward = [&](const float* hh, const float* ih) {
      RnnWeights<float> w = weights_of(c, w_ih, w_hh, b_ih, b_hh, {});
      w.w_hh_packed = hh;
      w.w_ih_packed = ih;
      std::vector<float> y(static_cast<size_t>(c.rows() * c.H)), ws(k::rnn_forward_workspace_size(d, false));
      k::rnn_forward<float>(d, w, x.data(), c.I, nullptr, nullptr, y.data(), c.H, nullptr, nullptr, ws.data(),
                            false);
      return y;
    };
    const std::vector<float> want = forward(hh2.data(), ih2.data());
    EXPECT_EQ(forward(hh512.data(), ih512.data()), want);
    EXPECT_EQ(forward(hh512.data(), nullptr), want);
  }
}
