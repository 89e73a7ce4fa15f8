#pragma once
// Fused per-row pointwise math of each recurrent cell, forward and backward, used
// by the time loop in rnn.cpp. Internal to the kernel layer.
//
// Each cell is a struct with the same static interface, so the time loop is one
// template and the per-element loops carry no branch on the cell type:
//   kGates        gates per step (G)
//   kGateStride   width of one row of the saved-gates buffer, in units of H
//   kHasCell      keeps a cell state c (LSTM)
//   kDirectHiddenGrad  dh_{t-1} has a pointwise term besides dgates x W_hh (GRU)
//   fill_bias_row(H, row, b_ih, b_hh)        row: [kGateStride*H] written
//   forward_row<Training>(n, H, gates, bias, h_prev, c_prev, c, h)
//   backward_row(n, H, gates, h_prev, c_prev, c, dh_a, dh_b, dh_direct, dc, dgates)
// The row functions cover units [0, n) of a row, n <= H: gates points at unit 0
// of the first gate block and the gate blocks are H apart; the other pointers
// point at unit 0 of theirs. Callers split a row into column slices this way.
// rnn_simd.h has the same passes vectorised for float.
//
// Saved-gates row (one per packed row; it first holds the pre-activations without
// the biases, which forward_row adds from the bias row that fill_bias_row made,
// then, when training, the post-activations that backward reads):
//   Elman [H]:  pre = W_ih x + W_hh h (+ b_ih + b_hh)    -> h itself
//   LSTM [4H]:  pre (i, f, g, o)                         -> i, f, g, o
//   GRU  [4H]:  (r_pre, z_pre, hn, xn) with hn = W_hn h (+ b_hn) and
//               xn = W_in x (+ b_in)                     -> r, z, hn + b_hn, n
// The GRU keeps hn apart because r multiplies it, and keeps it after the step
// because backward needs it: dr = dn_pre * hn.
//
// Dgates row (same width): the gradient of the loss w.r.t. the pre-activations.
// For the GRU it is (dr_pre, dz_pre, dhn, dxn) with dhn = dn_pre * r (the gradient
// of W_hn h + b_hn) and dxn = dn_pre (the gradient of W_in x + b_in), so that
// columns [0, 3H) are the recurrent-side gradient and columns [0, 2H) + [3H, 4H)
// the input-side one.
//
// Pointers per row: h_prev [Hout] and c_prev [H] are the state entering the step;
// c [H] and h [H] (the unprojected h when proj_size > 0) are what it produces.
// In backward dh = dh_a + dh_b is the gradient w.r.t. h [H] (dy row plus the
// recurrent gradient, or the projected-back gradient plus a zero row), dc [H] holds
// the gradient w.r.t. c on entry and w.r.t. c_prev on return, dh_direct [H] gets
// the GRU's pointwise part of dh_prev. c_prev may equal c (in-place state update)
// and dh_direct may equal dh_b; that is why none of these pointers is restrict.
#include <cmath>
#include <cstdint>

namespace rnnkit::kernels::cpu::detail {

template <class T>
inline T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

// Bias row shared by the Elman and LSTM cells: both biases folded into the input
// projection.
template <class T>
inline void fill_summed_bias_row(int64_t width, T* row, const T* b_ih, const T* b_hh) {
  if (b_ih == nullptr) {
    for (int64_t j = 0; j < width; ++j) row[j] = T(0);
    return;
  }
  for (int64_t j = 0; j < width; ++j) row[j] = b_ih[j] + b_hh[j];
}

template <bool Relu>
struct ElmanCell {
  static constexpr int kGates = 1;
  static constexpr int kGateStride = 1;
  static constexpr bool kHasCell = false;
  static constexpr bool kDirectHiddenGrad = false;

  template <class T>
  static void fill_bias_row(int64_t H, T* row, const T* b_ih, const T* b_hh) {
    fill_summed_bias_row(H, row, b_ih, b_hh);
  }

  template <bool Training, class T>
  static void forward_row(int64_t n, int64_t H, T* gates, const T* bias, const T*, const T*, T*,
                          T* h) {
    for (int64_t j = 0; j < n; ++j) {
      const T pre = gates[j] + bias[j];
      // Relu keeps a NaN as NaN, as PyTorch does.
      const T v = Relu ? (pre < T(0) ? T(0) : pre) : std::tanh(pre);
      h[j] = v;
      if constexpr (Training) gates[j] = v;
    }
  }

  template <class T>
  static void backward_row(int64_t n, int64_t H, const T* gates, const T*, const T*, const T*,
                           const T* dh_a, const T* dh_b, T*, T*, T* dgates) {
    for (int64_t j = 0; j < n; ++j) {
      const T h = gates[j];
      const T dh = dh_a[j] + dh_b[j];
      dgates[j] = Relu ? (h > T(0) ? dh : T(0)) : dh * (T(1) - h * h);
    }
  }
};

struct LstmCell {
  static constexpr int kGates = 4;
  static constexpr int kGateStride = 4;
  static constexpr bool kHasCell = true;
  static constexpr bool kDirectHiddenGrad = false;

  template <class T>
  static void fill_bias_row(int64_t H, T* row, const T* b_ih, const T* b_hh) {
    fill_summed_bias_row(4 * H, row, b_ih, b_hh);
  }

  template <bool Training, class T>
  static void forward_row(int64_t n, int64_t H, T* gates, const T* bias, const T*,
                          const T* c_prev, T* c, T* h) {
    T* gi = gates;
    T* gf = gates + H;
    T* gg = gates + 2 * H;
    T* go = gates + 3 * H;
    for (int64_t j = 0; j < n; ++j) {
      const T i = sigmoid(gi[j] + bias[j]);
      const T f = sigmoid(gf[j] + bias[H + j]);
      const T g = std::tanh(gg[j] + bias[2 * H + j]);
      const T o = sigmoid(go[j] + bias[3 * H + j]);
      const T c_new = f * c_prev[j] + i * g;
      c[j] = c_new;
      h[j] = o * std::tanh(c_new);
      if constexpr (Training) {
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
      }
    }
  }

  template <class T>
  static void backward_row(int64_t n, int64_t H, const T* gates, const T*, const T* c_prev,
                           const T* c, const T* dh_a, const T* dh_b, T*, T* dc, T* dgates) {
    const T* gi = gates;
    const T* gf = gates + H;
    const T* gg = gates + 2 * H;
    const T* go = gates + 3 * H;
    for (int64_t j = 0; j < n; ++j) {
      const T i = gi[j], f = gf[j], g = gg[j], o = go[j];
      const T tanh_c = std::tanh(c[j]);
      const T dh = dh_a[j] + dh_b[j];
      const T dc_total = dc[j] + dh * o * (T(1) - tanh_c * tanh_c);
      dgates[j] = dc_total * g * i * (T(1) - i);
      dgates[H + j] = dc_total * c_prev[j] * f * (T(1) - f);
      dgates[2 * H + j] = dc_total * i * (T(1) - g * g);
      dgates[3 * H + j] = dh * tanh_c * o * (T(1) - o);
      dc[j] = dc_total * f;
    }
  }
};

struct GruCell {
  static constexpr int kGates = 3;
  static constexpr int kGateStride = 4;
  static constexpr bool kHasCell = false;
  static constexpr bool kDirectHiddenGrad = true;

  // Row (r, z, hn, xn): b_hr and b_hz fold into r and z; b_hn starts the
  // recurrent n-part, b_in the input n-part.
  template <class T>
  static void fill_bias_row(int64_t H, T* row, const T* b_ih, const T* b_hh) {
    if (b_ih == nullptr) {
      for (int64_t j = 0; j < 4 * H; ++j) row[j] = T(0);
      return;
    }
    for (int64_t j = 0; j < 2 * H; ++j) row[j] = b_ih[j] + b_hh[j];
    for (int64_t j = 0; j < H; ++j) row[2 * H + j] = b_hh[2 * H + j];
    for (int64_t j = 0; j < H; ++j) row[3 * H + j] = b_ih[2 * H + j];
  }

  template <bool Training, class T>
  static void forward_row(int64_t n, int64_t H, T* gates, const T* bias, const T* h_prev,
                          const T*, T*, T* h) {
    T* gr = gates;
    T* gz = gates + H;
    T* hn = gates + 2 * H;
    T* gn = gates + 3 * H;
    for (int64_t j = 0; j < n; ++j) {
      const T r = sigmoid(gr[j] + bias[j]);
      const T z = sigmoid(gz[j] + bias[H + j]);
      const T hn_b = hn[j] + bias[2 * H + j];
      const T cand = std::tanh(gn[j] + bias[3 * H + j] + r * hn_b);
      // (h - n) * z + n: PyTorch's evaluation order of (1 - z) * n + z * h.
      h[j] = (h_prev[j] - cand) * z + cand;
      if constexpr (Training) {
        gr[j] = r;
        gz[j] = z;
        hn[j] = hn_b;
        gn[j] = cand;
      }
    }
  }

  template <class T>
  static void backward_row(int64_t n, int64_t H, const T* gates, const T* h_prev, const T*,
                           const T*, const T* dh_a, const T* dh_b, T* dh_direct, T*, T* dgates) {
    const T* gr = gates;
    const T* gz = gates + H;
    const T* hn = gates + 2 * H;
    const T* gn = gates + 3 * H;
    for (int64_t j = 0; j < n; ++j) {
      const T r = gr[j], z = gz[j], cand = gn[j];
      const T dh = dh_a[j] + dh_b[j];
      const T dn_pre = dh * (T(1) - z) * (T(1) - cand * cand);
      const T dz = dh * (h_prev[j] - cand);
      dgates[j] = dn_pre * hn[j] * r * (T(1) - r);
      dgates[H + j] = dz * z * (T(1) - z);
      dgates[2 * H + j] = dn_pre * r;
      dgates[3 * H + j] = dn_pre;
      dh_direct[j] = dh * z;
    }
  }
};

}  // namespace rnnkit::kernels::cpu::detail
