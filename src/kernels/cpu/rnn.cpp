// Time loop of one recurrent layer direction: input projection for all steps as
// one GEMM, then per step one recurrent GEMM and one fused pointwise pass; the
// backward mirrors it and finishes with whole-sequence GEMMs for the weight
// gradients and dx. The cell math lives in rnn_pointwise.h.
#include "kernels/cpu/rnn.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rnn_pointwise.h"
#include "rnnkit/error.h"

namespace rnnkit::kernels::cpu {

namespace {

using detail::ElmanCell;
using detail::GruCell;
using detail::LstmCell;

// Pointwise loops go parallel above this many elements per step (rows * H); below
// it the OpenMP fork costs more than the loop.
constexpr int64_t kParallelMinElements = 16384;

// Buffers start on 64-byte boundaries when the workspace does.
constexpr size_t kAlignElements = 16;

size_t align_up(size_t n) { return (n + kAlignElements - 1) / kAlignElements * kAlignElements; }

int gate_stride(CellType cell) { return cell == CellType::GRU ? GruCell::kGateStride : gate_count(cell); }

// Forward workspace, offsets in elements of T:
//   gates [rows, S*H]  pre-activations (input projection + biases + recurrent term);
//                      after a training forward the post-activations (rnn_pointwise.h)
//   c     LSTM: training [rows, H] c_t of every packed row; inference [N, H] running c
//   m     proj_size > 0: training [rows, H] o*tanh(c) of every packed row (the input
//                      of the projection, kept for dW_hr); inference [N, H] one step's
//   zeros [max(H, Hout)] a zero row standing in for a null h0/c0 row
struct ForwardLayout {
  size_t gates = 0, c = 0, m = 0, zeros = 0, total = 0;
};

ForwardLayout forward_layout(const RnnLayerDims& d, bool training) {
  const size_t rows = static_cast<size_t>(packed_rows(d));
  const size_t H = static_cast<size_t>(d.hidden_size);
  const size_t N = static_cast<size_t>(d.batch);
  const size_t state_rows = training ? rows : N;
  ForwardLayout L;
  size_t at = 0;
  L.gates = at;
  at = align_up(at + rows * static_cast<size_t>(gate_stride(d.cell)) * H);
  L.c = at;
  if (d.cell == CellType::LSTM) at = align_up(at + state_rows * H);
  L.m = at;
  if (d.proj_size > 0) at = align_up(at + state_rows * H);
  L.zeros = at;
  at = align_up(at + std::max(H, static_cast<size_t>(hidden_out_size(d))));
  L.total = at;
  return L;
}

// Backward workspace, offsets in elements of T:
//   dgates   [rows, S*H]  gradient w.r.t. the pre-activations of every packed row
//   dh_state [N, Hout]    gradient w.r.t. the h entering the step being processed
//   dc_state [N, H]       LSTM: likewise for c
//   h_prev   [rows, Hout] the h that entered each packed row's step (0 for null h0),
//                         so that dW_hh is one GEMM; the GRU's pointwise pass reads it
//   dh_proj  [rows, P]    proj_size > 0: gradient w.r.t. each row's projected h
//   dm       [N, H]       proj_size > 0: one step's gradient w.r.t. o*tanh(c)
//   ones     [rows]       ones, for the bias column sums as a GEMM
//   zeros    [max(H, Hout)]
struct BackwardLayout {
  size_t dgates = 0, dh_state = 0, dc_state = 0, h_prev = 0, dh_proj = 0, dm = 0, ones = 0,
         zeros = 0, total = 0;
};

BackwardLayout backward_layout(const RnnLayerDims& d) {
  const size_t rows = static_cast<size_t>(packed_rows(d));
  const size_t H = static_cast<size_t>(d.hidden_size);
  const size_t Hout = static_cast<size_t>(hidden_out_size(d));
  const size_t N = static_cast<size_t>(d.batch);
  const size_t P = static_cast<size_t>(d.proj_size);
  BackwardLayout L;
  size_t at = 0;
  L.dgates = at;
  at = align_up(at + rows * static_cast<size_t>(gate_stride(d.cell)) * H);
  L.dh_state = at;
  at = align_up(at + N * Hout);
  L.dc_state = at;
  if (d.cell == CellType::LSTM) at = align_up(at + N * H);
  L.h_prev = at;
  at = align_up(at + rows * Hout);
  L.dh_proj = at;
  if (P > 0) at = align_up(at + rows * P);
  L.dm = at;
  if (P > 0) at = align_up(at + N * H);
  L.ones = at;
  at = align_up(at + rows);
  L.zeros = at;
  at = align_up(at + std::max(H, Hout));
  L.total = at;
  return L;
}

// One step of the walk, in the forward pass's processing order.
struct Step {
  int64_t n;            // active rows, batch_sizes[t]
  int64_t off;          // first packed row of step t
  int64_t n_cont;       // rows [0, n_cont) continue from the previous processed step,
                        // rows [n_cont, n) start from h0/c0
  int64_t off_prev;     // first packed row of the previous processed step
  int64_t n_next_cont;  // rows [0, n_next_cont) go on to the next processed step,
                        // rows [n_next_cont, n) end here: their state is h_n/c_n
};

// Calls fn(Step) for every step; in the forward pass's processing order when
// forward_order, in the opposite order otherwise.
template <class Fn>
void for_each_step(const RnnLayerDims& d, int64_t rows, bool forward_order, Fn&& fn) {
  const int64_t T = d.steps;
  const int64_t* bs = d.batch_sizes;
  const bool ascending = forward_order != d.reverse;
  int64_t t = ascending ? 0 : T - 1;
  int64_t off = ascending ? 0 : rows - bs[T - 1];
  for (int64_t k = 0; k < T; ++k) {
    Step s;
    s.n = bs[t];
    s.off = off;
    if (!d.reverse) {
      s.n_cont = t > 0 ? s.n : 0;
      s.off_prev = t > 0 ? off - bs[t - 1] : 0;
      s.n_next_cont = t + 1 < T ? bs[t + 1] : 0;
    } else {
      s.n_cont = t + 1 < T ? bs[t + 1] : 0;
      s.off_prev = off + s.n;
      s.n_next_cont = t > 0 ? s.n : 0;
    }
    fn(s);
    if (ascending) {
      off += bs[t];
      ++t;
    } else if (t > 0) {
      off -= bs[t - 1];
      --t;
    }
  }
}

template <class T>
void copy_row(int64_t n, const T* src, T* dst) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
}

template <class T>
void set_row(int64_t n, T value, T* dst) {
  std::fill(dst, dst + n, value);
}

template <class T>
void check_common(const RnnLayerDims& d, const RnnWeights<T>& w, int64_t ldx, int64_t ldy,
                  const void* workspace, const char* fn) {
  check_rnn_dims(d);
  RNNKIT_CHECK(w.w_ih != nullptr && w.w_hh != nullptr, fn, ": weight_ih and weight_hh are required");
  RNNKIT_CHECK(!d.has_bias || (w.b_ih != nullptr && w.b_hh != nullptr), fn,
               ": has_bias is set but bias_ih or bias_hh is null");
  RNNKIT_CHECK(d.proj_size == 0 || w.w_hr != nullptr, fn, ": proj_size is ", d.proj_size,
               " but weight_hr is null");
  RNNKIT_CHECK(ldx >= d.input_size, fn, ": ldx must be at least input_size (", d.input_size,
               "), got ", ldx);
  RNNKIT_CHECK(ldy >= hidden_out_size(d), fn, ": ldy must be at least the output width (",
               hidden_out_size(d), "), got ", ldy);
  RNNKIT_CHECK(workspace != nullptr, fn, ": workspace is null");
}

template <class T, class Cell, bool Training>
void forward_impl(const RnnLayerDims& d, const RnnWeights<T>& w, const T* x, int64_t ldx,
                  const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace) {
  const int64_t I = d.input_size, H = d.hidden_size, P = d.proj_size;
  const int64_t Hout = hidden_out_size(d);
  const int64_t GH = Cell::kGates * H;      // width of the GEMM outputs
  const int64_t S = Cell::kGateStride * H;  // row stride of the gates buffer
  const int64_t rows = packed_rows(d);
  const ForwardLayout L = forward_layout(d, Training);
  T* gates = workspace + L.gates;  // [rows, S]
  T* c_buf = workspace + L.c;      // [rows, H] training, [N, H] inference
  T* m_buf = workspace + L.m;      // [rows, H] training, [N, H] inference
  T* zeros = workspace + L.zeros;  // [max(H, Hout)]
  set_row(std::max(H, Hout), T(0), zeros);

  const T* b_ih = d.has_bias ? w.b_ih : nullptr;
  const T* b_hh = d.has_bias ? w.b_hh : nullptr;
#pragma omp parallel for schedule(static) if (rows * H >= kParallelMinElements)
  for (int64_t r = 0; r < rows; ++r) Cell::fill_bias_row(H, gates + r * S, b_ih, b_hh);

  // Input projection of every step: gates += x W_ih^T. The GRU's n-part goes to
  // columns [3H, 4H) so that the recurrent GEMM's n-part lands apart in [2H, 3H).
  if constexpr (Cell::kGateStride == Cell::kGates) {
    gemm(false, true, rows, GH, I, T(1), x, ldx, w.w_ih, I, T(1), gates, S);
  } else {
    gemm(false, true, rows, 2 * H, I, T(1), x, ldx, w.w_ih, I, T(1), gates, S);
    gemm(false, true, rows, H, I, T(1), x, ldx, w.w_ih + 2 * H * I, I, T(1), gates + 3 * H, S);
  }

  for_each_step(d, rows, true, [&](const Step& s) {
    T* g = gates + s.off * S;  // [n, S]
    const T* y_prev = s.n_cont > 0 ? y + s.off_prev * ldy : y;  // [n_cont, Hout]
    // Recurrent term: gates[:, 0:GH] += h_prev W_hh^T, h_prev being the previous
    // step's y rows and, for rows starting here, h0 (nothing to add when null).
    gemm(false, true, s.n_cont, GH, Hout, T(1), y_prev, ldy, w.w_hh, Hout, T(1), g, S);
    if (h0 != nullptr && s.n > s.n_cont)
      gemm(false, true, s.n - s.n_cont, GH, Hout, T(1), h0 + s.n_cont * Hout, Hout, w.w_hh, Hout,
           T(1), g + s.n_cont * S, S);

    // State written this step: c [n, H] and the unprojected h [n, H] (m when
    // projecting, else straight into y).
    T* c_cur = c_buf;         // [n, H]
    const T* c_prev = c_buf;  // [n_cont, H]
    if constexpr (Training && Cell::kHasCell) {
      c_cur = c_buf + s.off * H;
      if (s.n_cont > 0) c_prev = c_buf + s.off_prev * H;
    }
    T* h_out = P > 0 ? (Training ? m_buf + s.off * H : m_buf) : y + s.off * ldy;
    const int64_t ld_h_out = P > 0 ? H : ldy;
#pragma omp parallel for schedule(static) if (s.n * H >= kParallelMinElements)
    for (int64_t b = 0; b < s.n; ++b) {
      const bool cont = b < s.n_cont;
      const T* hp = cont ? y_prev + b * ldy : (h0 != nullptr ? h0 + b * Hout : zeros);
      const T* cp = nullptr;
      T* cc = nullptr;
      if constexpr (Cell::kHasCell) {
        cp = cont ? c_prev + b * H : (c0 != nullptr ? c0 + b * H : zeros);
        cc = c_cur + b * H;
      }
      Cell::template forward_row<Training>(H, g + b * S, hp, cp, cc, h_out + b * ld_h_out);
    }
    if (P > 0) gemm(false, true, s.n, P, H, T(1), h_out, H, w.w_hr, H, T(0), y + s.off * ldy, ldy);

    for (int64_t b = s.n_next_cont; b < s.n; ++b) {
      if (h_n != nullptr) copy_row(Hout, y + (s.off + b) * ldy, h_n + b * Hout);
      if constexpr (Cell::kHasCell)
        if (c_n != nullptr) copy_row(H, c_cur + b * H, c_n + b * H);
    }
  });
}

template <class T, class Cell>
void backward_impl(const RnnLayerDims& d, const RnnWeights<T>& w, const T* x, int64_t ldx,
                   const T* h0, const T* c0, const T* y, int64_t ldy, const T* workspace,
                   const T* dy, int64_t lddy, const T* dh_n, const T* dc_n, T* dx, int64_t lddx,
                   T beta_dx, T* dh0, T* dc0, const RnnGrads<T>& dw, T* backward_workspace) {
  const int64_t I = d.input_size, H = d.hidden_size, P = d.proj_size;
  const int64_t Hout = hidden_out_size(d);
  const int64_t GH = Cell::kGates * H;
  const int64_t S = Cell::kGateStride * H;
  const int64_t rows = packed_rows(d);
  const ForwardLayout FL = forward_layout(d, true);
  const T* gates = workspace + FL.gates;  // [rows, S] post-activations
  const T* c_all = workspace + FL.c;      // [rows, H]
  const T* m_all = workspace + FL.m;      // [rows, H]
  const BackwardLayout L = backward_layout(d);
  T* dgates = backward_workspace + L.dgates;      // [rows, S]
  T* dh_state = backward_workspace + L.dh_state;  // [N, Hout]
  T* dc_state = backward_workspace + L.dc_state;  // [N, H]
  T* h_prev = backward_workspace + L.h_prev;      // [rows, Hout]
  T* dh_proj = backward_workspace + L.dh_proj;    // [rows, P]
  T* dm = backward_workspace + L.dm;              // [N, H]
  T* ones = backward_workspace + L.ones;          // [rows]
  T* zeros = backward_workspace + L.zeros;        // [max(H, Hout)]
  set_row(std::max(H, Hout), T(0), zeros);

  for_each_step(d, rows, true, [&](const Step& s) {
    for (int64_t b = 0; b < s.n; ++b) {
      T* dst = h_prev + (s.off + b) * Hout;
      if (b < s.n_cont)
        copy_row(Hout, y + (s.off_prev + b) * ldy, dst);
      else if (h0 != nullptr)
        copy_row(Hout, h0 + b * Hout, dst);
      else
        set_row(Hout, T(0), dst);
    }
  });

  for_each_step(d, rows, false, [&](const Step& s) {
    // Rows whose sequence ends at this step take dh_n/dc_n; the others already
    // hold the recurrent gradient from the step after.
    for (int64_t b = s.n_next_cont; b < s.n; ++b) {
      if (dh_n != nullptr)
        copy_row(Hout, dh_n + b * Hout, dh_state + b * Hout);
      else
        set_row(Hout, T(0), dh_state + b * Hout);
      if constexpr (Cell::kHasCell) {
        if (dc_n != nullptr)
          copy_row(H, dc_n + b * H, dc_state + b * H);
        else
          set_row(H, T(0), dc_state + b * H);
      }
    }

    // With a projection the cell sees dm = (dy + dh) W_hr; without, dy + dh itself.
    if (P > 0) {
      T* dhp = dh_proj + s.off * P;  // [n, P]
      for (int64_t b = 0; b < s.n; ++b) {
        const T* dyr = dy != nullptr ? dy + (s.off + b) * lddy : zeros;
        const T* dhr = dh_state + b * Hout;
        T* dst = dhp + b * P;
        for (int64_t j = 0; j < P; ++j) dst[j] = dyr[j] + dhr[j];
      }
      gemm(false, false, s.n, H, P, T(1), dhp, P, w.w_hr, H, T(0), dm, H);
    }

    const T* g = gates + s.off * S;
    T* dg = dgates + s.off * S;
#pragma omp parallel for schedule(static) if (s.n * H >= kParallelMinElements)
    for (int64_t b = 0; b < s.n; ++b) {
      const T* dh_a;
      const T* dh_b;
      if (P > 0) {
        dh_a = dm + b * H;
        dh_b = zeros;
      } else {
        dh_a = dy != nullptr ? dy + (s.off + b) * lddy : zeros;
        dh_b = dh_state + b * Hout;
      }
      const T* cp = nullptr;
      const T* cc = nullptr;
      T* dc = nullptr;
      if constexpr (Cell::kHasCell) {
        cp = b < s.n_cont ? c_all + (s.off_prev + b) * H : (c0 != nullptr ? c0 + b * H : zeros);
        cc = c_all + (s.off + b) * H;
        dc = dc_state + b * H;
      }
      Cell::backward_row(H, g + b * S, h_prev + (s.off + b) * Hout, cp, cc, dh_a, dh_b,
                         dh_state + b * Hout, dc, dg + b * S);
    }

    // dh_prev = dgates[:, 0:GH] W_hh (+ the GRU's pointwise term already there).
    // Rows starting here only feed dh0.
    const int64_t m = dh0 != nullptr ? s.n : s.n_cont;
    gemm(false, false, m, Hout, GH, T(1), dg, S, w.w_hh, Hout,
         Cell::kDirectHiddenGrad ? T(1) : T(0), dh_state, Hout);
    for (int64_t b = s.n_cont; b < s.n; ++b) {
      if (dh0 != nullptr) copy_row(Hout, dh_state + b * Hout, dh0 + b * Hout);
      if constexpr (Cell::kHasCell)
        if (dc0 != nullptr) copy_row(H, dc_state + b * H, dc0 + b * H);
    }
  });

  // Whole-sequence products. Input side: columns [0, GH) of dgates, except the
  // GRU whose n-part is column block [3H, 4H).
  constexpr bool split_n = Cell::kGateStride != Cell::kGates;
  const int64_t GH_first = split_n ? 2 * H : GH;
  if (dw.dw_ih != nullptr) {
    gemm(true, false, GH_first, I, rows, T(1), dgates, S, x, ldx, T(1), dw.dw_ih, I);
    if (split_n)
      gemm(true, false, H, I, rows, T(1), dgates + 3 * H, S, x, ldx, T(1), dw.dw_ih + 2 * H * I, I);
  }
  if (dx != nullptr) {
    gemm(false, false, rows, I, GH_first, T(1), dgates, S, w.w_ih, I, beta_dx, dx, lddx);
    if (split_n)
      gemm(false, false, rows, I, H, T(1), dgates + 3 * H, S, w.w_ih + 2 * H * I, I, T(1), dx, lddx);
  }
  if (dw.dw_hh != nullptr)
    gemm(true, false, GH, Hout, rows, T(1), dgates, S, h_prev, Hout, T(1), dw.dw_hh, Hout);
  if (d.has_bias && (dw.db_ih != nullptr || dw.db_hh != nullptr)) {
    set_row(rows, T(1), ones);
    if (dw.db_hh != nullptr) gemm(false, false, 1, GH, rows, T(1), ones, rows, dgates, S, T(1), dw.db_hh, GH);
    if (dw.db_ih != nullptr) {
      gemm(false, false, 1, GH_first, rows, T(1), ones, rows, dgates, S, T(1), dw.db_ih, GH);
      if (split_n)
        gemm(false, false, 1, H, rows, T(1), ones, rows, dgates + 3 * H, S, T(1), dw.db_ih + 2 * H, GH);
    }
  }
  if (P > 0 && dw.dw_hr != nullptr)
    gemm(true, false, P, H, rows, T(1), dh_proj, P, m_all, H, T(1), dw.dw_hr, H);
}

template <class Fn>
void dispatch_cell(CellType cell, Fn&& fn) {
  switch (cell) {
    case CellType::RNN_TANH: fn(ElmanCell<false>{}); return;
    case CellType::RNN_RELU: fn(ElmanCell<true>{}); return;
    case CellType::LSTM: fn(LstmCell{}); return;
    case CellType::GRU: fn(GruCell{}); return;
  }
  RNNKIT_CHECK(false, "rnn kernel: unknown cell type ", static_cast<int>(cell));
}

}  // namespace

int gate_count(CellType cell) {
  switch (cell) {
    case CellType::RNN_TANH:
    case CellType::RNN_RELU: return 1;
    case CellType::LSTM: return 4;
    case CellType::GRU: return 3;
  }
  RNNKIT_CHECK(false, "gate_count: unknown cell type ", static_cast<int>(cell));
  return 0;
}

int64_t hidden_out_size(const RnnLayerDims& dims) {
  return dims.proj_size > 0 ? dims.proj_size : dims.hidden_size;
}

int64_t packed_rows(const RnnLayerDims& dims) {
  int64_t rows = 0;
  for (int64_t t = 0; t < dims.steps; ++t) rows += dims.batch_sizes[t];
  return rows;
}

void check_rnn_dims(const RnnLayerDims& d) {
  gate_count(d.cell);  // throws on a cell value outside the enum
  RNNKIT_CHECK(d.input_size > 0, "rnn kernel: input_size must be positive, got ", d.input_size);
  RNNKIT_CHECK(d.hidden_size > 0, "rnn kernel: hidden_size must be positive, got ", d.hidden_size);
  RNNKIT_CHECK(d.proj_size >= 0, "rnn kernel: proj_size must be non-negative, got ", d.proj_size);
  RNNKIT_CHECK(d.proj_size == 0 || d.cell == CellType::LSTM,
               "rnn kernel: proj_size is only supported by LSTM, got proj_size ", d.proj_size);
  RNNKIT_CHECK(d.proj_size < d.hidden_size, "rnn kernel: proj_size has to be smaller than hidden_size (",
               d.hidden_size, "), got ", d.proj_size);
  RNNKIT_CHECK(d.batch > 0, "rnn kernel: batch must be positive, got ", d.batch);
  RNNKIT_CHECK(d.steps > 0, "rnn kernel: steps must be positive, got ", d.steps);
  RNNKIT_CHECK(d.batch_sizes != nullptr, "rnn kernel: batch_sizes is null");
  RNNKIT_CHECK(d.batch_sizes[0] == d.batch, "rnn kernel: batch_sizes[0] must equal batch (", d.batch,
               "), got ", d.batch_sizes[0]);
  for (int64_t t = 1; t < d.steps; ++t)
    RNNKIT_CHECK(d.batch_sizes[t] > 0 && d.batch_sizes[t] <= d.batch_sizes[t - 1],
                 "rnn kernel: batch_sizes must be positive and non-increasing, got batch_sizes[", t - 1,
                 "] = ", d.batch_sizes[t - 1], " and batch_sizes[", t, "] = ", d.batch_sizes[t]);
}

size_t rnn_forward_workspace_size(const RnnLayerDims& dims, bool training) {
  check_rnn_dims(dims);
  return forward_layout(dims, training).total;
}

size_t rnn_backward_workspace_size(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  return backward_layout(dims).total;
}

template <class T>
void rnn_forward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                 const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace,
                 bool training) {
  check_common(dims, w, ldx, ldy, workspace, "rnn_forward");
  RNNKIT_CHECK(x != nullptr && y != nullptr, "rnn_forward: x and y are required");
  dispatch_cell(dims.cell, [&](auto cell) {
    using Cell = decltype(cell);
    if (training)
      forward_impl<T, Cell, true>(dims, w, x, ldx, h0, c0, y, ldy, h_n, c_n, workspace);
    else
      forward_impl<T, Cell, false>(dims, w, x, ldx, h0, c0, y, ldy, h_n, c_n, workspace);
  });
}

template <class T>
void rnn_backward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                  const T* h0, const T* c0, const T* y, int64_t ldy, const T* workspace,
                  const T* dy, int64_t lddy, const T* dh_n, const T* dc_n, T* dx,
                  int64_t lddx, T beta_dx, T* dh0, T* dc0, const RnnGrads<T>& dw,
                  T* backward_workspace) {
  check_common(dims, w, ldx, ldy, workspace, "rnn_backward");
  RNNKIT_CHECK(x != nullptr && y != nullptr, "rnn_backward: x and y are required");
  RNNKIT_CHECK(backward_workspace != nullptr, "rnn_backward: backward_workspace is null");
  RNNKIT_CHECK(dy == nullptr || lddy >= hidden_out_size(dims),
               "rnn_backward: lddy must be at least the output width (", hidden_out_size(dims),
               "), got ", lddy);
  RNNKIT_CHECK(dx == nullptr || lddx >= dims.input_size,
               "rnn_backward: lddx must be at least input_size (", dims.input_size, "), got ", lddx);
  dispatch_cell(dims.cell, [&](auto cell) {
    using Cell = decltype(cell);
    backward_impl<T, Cell>(dims, w, x, ldx, h0, c0, y, ldy, workspace, dy, lddy, dh_n, dc_n, dx,
                           lddx, beta_dx, dh0, dc0, dw, backward_workspace);
  });
}

#define RNNKIT_INSTANTIATE_RNN(T)                                                                \
  template void rnn_forward<T>(const RnnLayerDims&, const RnnWeights<T>&, const T*, int64_t,     \
                               const T*, const T*, T*, int64_t, T*, T*, T*, bool);               \
  template void rnn_backward<T>(const RnnLayerDims&, const RnnWeights<T>&, const T*, int64_t,    \
                                const T*, const T*, const T*, int64_t, const T*, const T*,       \
                                int64_t, const T*, const T*, T*, int64_t, T, T*, T*,             \
                                const RnnGrads<T>&, T*);

RNNKIT_INSTANTIATE_RNN(float)
RNNKIT_INSTANTIATE_RNN(double)
#undef RNNKIT_INSTANTIATE_RNN

}  // namespace rnnkit::kernels::cpu
