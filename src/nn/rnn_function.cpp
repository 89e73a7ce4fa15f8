// Forward and fused backward of a whole recurrent call (see rnn_function.h).
// Buffers, all allocated once per call as tensors (rows = sum(batch_sizes),
// D = directions, DH = D * H_out, L = num_layers), rightmost index fastest:
//   x        [rows, I]        layer 0's input, time-major packed
//   ys       [L, rows, DH]    every layer's output (training); inference keeps two
//   dropped  [L-1, rows, DH]  layers 1..L-1's inputs after dropout (training with dropout)
//   masks    [L-1, rows, DH]  the dropout masks, 0 or 1/(1-p) (training with dropout)
//   workspace                 the kernels' forward workspaces, one per layer and
//                             direction in training, one shared in inference
#include "nn/rnn_function.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "rnnkit/autograd/node.h"
#include "tensor/native.h"
#include "tensor/tensor_impl.h"

namespace rnnkit::nn::detail {

namespace {

namespace k = kernels::cpu;

// Workspace slices start on 64-byte boundaries, as the kernels prefer.
size_t align_elements(size_t n) { return (n + 15) / 16 * 16; }

// Everything the backward needs, and the geometry of the call.
struct Saved {
  RecurrentSpec spec;
  RecurrentLayout layout;
  Dtype dtype = kFloat32;
  int64_t T = 0, N = 0, rows = 0, D = 1, L = 1, Hout = 0, DH = 0, per_direction = 0;
  Shape input_shape;
  bool has_h0 = false, has_c0 = false;

  Tensor x;                     // [rows, I]
  Tensor h0, c0;                // kernel batch order [L*D, N, Hout] / [L*D, N, H], or undefined
  std::vector<Tensor> weights;  // contiguous, detached
  Tensor ys, dropped, masks, workspace;
  std::vector<size_t> workspace_offset;  // [L*D]

  k::RnnLayerDims dims(int64_t layer, int64_t direction) const {
    k::RnnLayerDims d;
    d.cell = spec.cell;
    d.input_size = layer == 0 ? spec.input_size : DH;
    d.hidden_size = spec.hidden_size;
    d.proj_size = spec.proj_size;
    d.batch = N;
    d.steps = T;
    d.batch_sizes = layout.batch_sizes.data();
    d.reverse = direction == 1;
    d.has_bias = spec.has_bias;
    return d;
  }

  template <class T>
  k::RnnWeights<T> layer_weights(int64_t layer, int64_t direction) const {
    const Tensor* w = &weights[static_cast<size_t>((layer * D + direction) * per_direction)];
    k::RnnWeights<T> r;
    r.w_ih = w[0].data_ptr<T>();
    r.w_hh = w[1].data_ptr<T>();
    int next = 2;
    if (spec.has_bias) {
      r.b_ih = w[2].data_ptr<T>();
      r.b_hh = w[3].data_ptr<T>();
      next = 4;
    }
    if (spec.proj_size > 0) r.w_hr = w[next].data_ptr<T>();
    return r;
  }

  // Layer l's input rows (after dropout) and its row stride.
  template <class T>
  const T* layer_input(int64_t layer) const {
    if (layer == 0) return x.data_ptr<T>();
    const Tensor& src = spec.dropout_active ? dropped : ys;
    return src.data_ptr<T>() + (layer - 1) * rows * DH;
  }
  int64_t layer_input_stride(int64_t layer) const { return layer == 0 ? spec.input_size : DH; }
};

// dst[k][j] = src[k][perm[j]]: K blocks of N rows of width W.
template <class T>
void gather_batch(const T* src, T* dst, int64_t K, int64_t N, int64_t W, const int64_t* perm) {
  for (int64_t kk = 0; kk < K; ++kk)
    for (int64_t j = 0; j < N; ++j)
      std::memcpy(dst + (kk * N + j) * W, src + (kk * N + perm[j]) * W, static_cast<size_t>(W) * sizeof(T));
}

// dst[k][perm[j]] = src[k][j].
template <class T>
void scatter_batch(const T* src, T* dst, int64_t K, int64_t N, int64_t W, const int64_t* perm) {
  for (int64_t kk = 0; kk < K; ++kk)
    for (int64_t j = 0; j < N; ++j)
      std::memcpy(dst + (kk * N + perm[j]) * W, src + (kk * N + j) * W, static_cast<size_t>(W) * sizeof(T));
}

// A state tensor in the user's batch order -> the kernels' order (a copy when permuted).
template <class T>
Tensor to_kernel_order(const Tensor& state, const Tensor& sorted_indices, int64_t K, int64_t N, int64_t W) {
  Tensor src = native::contiguous(state.detach());
  if (!sorted_indices.defined()) return src;
  Tensor dst = empty({K, N, W}, TensorOptions(src.dtype()));
  gather_batch(src.data_ptr<T>(), dst.data_ptr<T>(), K, N, W, sorted_indices.data_ptr<int64_t>());
  return dst;
}

// [rows, W] time-major rows <-> the user's [N, T, W] for batch_first padded
// batches. t may have any strides (an incoming gradient is often expanded).
Tensor rows_from_batch_first(const Tensor& t, int64_t T, int64_t N, int64_t W) {
  Tensor rows = empty({T, N, W}, TensorOptions(t.dtype()));
  native::copy_into(rows, t.detach().transpose(0, 1));
  return rows.view({T * N, W});
}

Tensor batch_first_from_rows(const Tensor& rows, int64_t T, int64_t N, int64_t W, const Shape& shape) {
  Tensor out = empty({N, T, W}, TensorOptions(rows.dtype()));
  native::copy_into(out.transpose(0, 1), rows.view({T, N, W}));
  return out.view(shape);
}

// One mask element: 0 with probability p, else 1/(1-p). Both paths (a saved
// mask in training, in place without a graph) draw through this, one draw per
// element in row-major order, so a seed gives the same masks either way.
template <class T>
T dropout_factor(Generator& gen, double p) {
  return gen.next_double() >= p ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
}

class RecurrentBackward final : public autograd::Node {
 public:
  explicit RecurrentBackward(std::shared_ptr<Saved> saved) : saved_(std::move(saved)) {}
  autograd::tensor_list apply(autograd::tensor_list&& grads) override;
  std::string name() const override { return saved_ ? saved_->spec.node_name : "RecurrentBackward"; }
  void release_saved() override { saved_.reset(); }

 private:
  template <class T>
  autograd::tensor_list backward(const autograd::tensor_list& grads);
  std::shared_ptr<Saved> saved_;
};

// Inputs of the node: 0 input, 1 h0, 2 c0, 3.. the weights.
constexpr size_t kFirstWeight = 3;

template <class T>
RecurrentResult forward_impl(const std::shared_ptr<Saved>& sp, const Tensor& input, const Tensor& h0_user,
                             const Tensor& c0_user, bool training) {
  Saved& s = *sp;
  const RecurrentSpec& spec = s.spec;
  const RecurrentLayout& lay = s.layout;
  const int64_t I = spec.input_size, H = spec.hidden_size, Hout = s.Hout, DH = s.DH, rows = s.rows;
  const int64_t L = s.L, D = s.D, N = s.N, T_ = s.T;
  const bool lstm = spec.cell == k::CellType::LSTM;
  const TensorOptions opts(s.dtype);

  s.x = lay.batch_first ? rows_from_batch_first(input, T_, N, I) : native::contiguous(input.detach());
  if (s.has_h0) s.h0 = to_kernel_order<T>(h0_user, lay.sorted_indices, L * D, N, Hout);
  if (s.has_c0) s.c0 = to_kernel_order<T>(c0_user, lay.sorted_indices, L * D, N, H);

  // Workspaces: one per layer and direction kept for backward, or one reused.
  s.workspace_offset.assign(static_cast<size_t>(L * D), 0);
  size_t ws_total = 0;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t d = 0; d < D; ++d) {
      const size_t n = align_elements(k::rnn_forward_workspace_size(s.dims(l, d), training));
      if (training) {
        s.workspace_offset[static_cast<size_t>(l * D + d)] = ws_total;
        ws_total += n;
      } else {
        ws_total = std::max(ws_total, n);
      }
    }
  s.workspace = empty({static_cast<int64_t>(ws_total)}, opts);
  T* ws = s.workspace.data_ptr<T>();

  // Layer outputs: all of them in training; two alternating buffers otherwise,
  // the last layer writing straight into the output when the layout allows.
  const bool direct_output = !training && !lay.batch_first;
  RecurrentResult result;
  Tensor scratch;
  if (training) {
    s.ys = empty({L, rows, DH}, opts);
    if (spec.dropout_active && L > 1) {
      s.masks = empty({L - 1, rows, DH}, opts);
      s.dropped = empty({L - 1, rows, DH}, opts);
    }
  } else {
    const int64_t buffers = std::min<int64_t>(direct_output ? L - 1 : L, 2);
    if (buffers > 0) scratch = empty({buffers, rows, DH}, opts);
  }
  if (direct_output) result.output = empty(lay.output_shape, opts);
  auto layer_output = [&](int64_t l) -> Tensor {  // [rows, DH]
    if (training) return s.ys.select(0, l);
    if (l == L - 1 && direct_output) return result.output;
    return scratch.select(0, l % 2);
  };

  // Final states, in the kernels' batch order first.
  const bool permuted = lay.sorted_indices.defined();
  Tensor h_n_k, c_n_k;
  if (lay.return_h_n) h_n_k = empty({L * D, N, Hout}, opts);
  if (lstm) c_n_k = empty({L * D, N, H}, opts);

  Generator& gen = spec.generator ? *spec.generator : default_generator();
  const T* x_in = s.x.data_ptr<T>();
  int64_t ldx = I;
  for (int64_t l = 0; l < L; ++l) {
    T* y = layer_output(l).template data_ptr<T>();
    for (int64_t d = 0; d < D; ++d) {
      const int64_t sd = l * D + d;
      const k::RnnLayerDims dims = s.dims(l, d);
      k::rnn_forward<T>(dims, s.layer_weights<T>(l, d), x_in, ldx,
                        s.has_h0 ? s.h0.data_ptr<T>() + sd * N * Hout : nullptr,
                        s.has_c0 ? s.c0.data_ptr<T>() + sd * N * H : nullptr, y + d * Hout, DH,
                        h_n_k.defined() ? h_n_k.data_ptr<T>() + sd * N * Hout : nullptr,
                        lstm ? c_n_k.data_ptr<T>() + sd * N * H : nullptr,
                        ws + s.workspace_offset[static_cast<size_t>(sd)], training);
    }
    x_in = y;
    ldx = DH;
    if (spec.dropout_active && l + 1 < L) {
      const int64_t n = rows * DH;
      if (training) {
        T* mask = s.masks.data_ptr<T>() + l * n;
        T* dropped = s.dropped.data_ptr<T>() + l * n;
        for (int64_t i = 0; i < n; ++i) {
          mask[i] = dropout_factor<T>(gen, spec.dropout);
          dropped[i] = y[i] * mask[i];
        }
        x_in = dropped;
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] *= dropout_factor<T>(gen, spec.dropout);
      }
    }
  }

  if (!direct_output) {
    // In training the output is a second handle on the saved buffer's storage,
    // so that the node holds no reference to its own output.
    Tensor last = layer_output(L - 1);
    result.output = lay.batch_first ? batch_first_from_rows(last, T_, N, DH, lay.output_shape)
                                    : last.view(lay.output_shape);
  }
  auto to_user_order = [&](const Tensor& t, const Shape& shape, int64_t W) {
    if (!permuted) return t.view(shape);
    Tensor out = empty(shape, opts);
    gather_batch(t.data_ptr<T>(), out.data_ptr<T>(), L * D, N, W, lay.unsorted_indices.data_ptr<int64_t>());
    return out;
  };
  if (h_n_k.defined()) result.h_n = to_user_order(h_n_k, lay.hidden_shape, Hout);
  if (c_n_k.defined()) result.c_n = to_user_order(c_n_k, lay.cell_shape, H);
  return result;
}

template <class T>
autograd::tensor_list RecurrentBackward::backward(const autograd::tensor_list& grads) {
  const Saved& s = *saved_;
  const RecurrentSpec& spec = s.spec;
  const RecurrentLayout& lay = s.layout;
  const int64_t I = spec.input_size, H = spec.hidden_size, Hout = s.Hout, DH = s.DH, rows = s.rows;
  const int64_t L = s.L, D = s.D, N = s.N, T_ = s.T;
  const bool lstm = spec.cell == k::CellType::LSTM;
  const bool permuted = lay.sorted_indices.defined();
  const TensorOptions opts(s.dtype);
  auto wants = [&](size_t input) { return input < next_edges.size() && next_edges[input].valid(); };

  // Incoming gradients in the kernels' layout.
  const Tensor& g_out = grads.size() > 0 ? grads[0] : Tensor();
  const Tensor& g_h_n = grads.size() > 1 ? grads[1] : Tensor();
  const Tensor& g_c_n = grads.size() > 2 ? grads[2] : Tensor();
  Tensor dy_top;
  if (g_out.defined())
    dy_top = lay.batch_first ? rows_from_batch_first(g_out, T_, N, DH) : native::contiguous(g_out);
  auto to_kernel_order_grad = [&](const Tensor& g, int64_t W) {
    if (!g.defined()) return Tensor();
    Tensor src = native::contiguous(g);
    if (!permuted) return src;
    Tensor dst = empty({L * D, N, W}, opts);
    scatter_batch(src.data_ptr<T>(), dst.data_ptr<T>(), L * D, N, W, lay.unsorted_indices.data_ptr<int64_t>());
    return dst;
  };
  Tensor dh_n = to_kernel_order_grad(g_h_n, Hout);
  Tensor dc_n = lstm ? to_kernel_order_grad(g_c_n, H) : Tensor();

  // Outgoing gradients.
  Tensor dh0 = wants(1) ? empty({L * D, N, Hout}, opts) : Tensor();
  Tensor dc0 = wants(2) && lstm ? empty({L * D, N, H}, opts) : Tensor();
  std::vector<Tensor> dweights(s.weights.size());
  for (size_t i = 0; i < s.weights.size(); ++i)
    if (wants(kFirstWeight + i)) dweights[i] = zeros(s.weights[i].sizes(), opts);
  Tensor dx = wants(0) ? empty({rows, I}, opts) : Tensor();

  size_t bws_size = 0;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t d = 0; d < D; ++d) bws_size = std::max(bws_size, k::rnn_backward_workspace_size(s.dims(l, d)));
  Tensor bws = empty({static_cast<int64_t>(bws_size)}, opts);
  // dY of the layer below, two alternating buffers: layer l's dx is layer l-1's dy.
  Tensor dlayer = L > 1 ? empty({std::min<int64_t>(L - 1, 2), rows, DH}, opts) : Tensor();

  const T* dy = dy_top.defined() ? dy_top.data_ptr<T>() : nullptr;
  for (int64_t l = L - 1; l >= 0; --l) {
    T* dx_l = l > 0 ? dlayer.data_ptr<T>() + ((l - 1) % 2) * rows * DH : (dx.defined() ? dx.data_ptr<T>() : nullptr);
    const int64_t lddx = l > 0 ? DH : I;
    const T* x_l = s.layer_input<T>(l);
    const int64_t ldx = s.layer_input_stride(l);
    const T* y_l = s.ys.data_ptr<T>() + l * rows * DH;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t sd = l * D + d;
      const size_t w0 = static_cast<size_t>(sd * s.per_direction);
      k::RnnGrads<T> dw;
      auto grad_ptr = [&](size_t offset) {
        const Tensor& g = dweights[w0 + offset];
        return g.defined() ? g.data_ptr<T>() : nullptr;
      };
      dw.dw_ih = grad_ptr(0);
      dw.dw_hh = grad_ptr(1);
      size_t next = 2;
      if (spec.has_bias) {
        dw.db_ih = grad_ptr(2);
        dw.db_hh = grad_ptr(3);
        next = 4;
      }
      if (spec.proj_size > 0) dw.dw_hr = grad_ptr(next);
      k::rnn_backward<T>(s.dims(l, d), s.layer_weights<T>(l, d), x_l, ldx,
                         s.has_h0 ? s.h0.data_ptr<T>() + sd * N * Hout : nullptr,
                         s.has_c0 ? s.c0.data_ptr<T>() + sd * N * H : nullptr, y_l + d * Hout, DH,
                         s.workspace.data_ptr<T>() + s.workspace_offset[static_cast<size_t>(sd)],
                         dy ? dy + d * Hout : nullptr, DH,
                         dh_n.defined() ? dh_n.data_ptr<T>() + sd * N * Hout : nullptr,
                         dc_n.defined() ? dc_n.data_ptr<T>() + sd * N * H : nullptr, dx_l, lddx,
                         d == 0 ? T(0) : T(1), dh0.defined() ? dh0.data_ptr<T>() + sd * N * Hout : nullptr,
                         dc0.defined() ? dc0.data_ptr<T>() + sd * N * H : nullptr, dw, bws.data_ptr<T>());
    }
    if (l > 0) {
      if (spec.dropout_active) {
        const T* mask = s.masks.data_ptr<T>() + (l - 1) * rows * DH;
        for (int64_t i = 0, n = rows * DH; i < n; ++i) dx_l[i] *= mask[i];
      }
      dy = dx_l;
    }
  }

  autograd::tensor_list out(kFirstWeight + s.weights.size());
  if (dx.defined())
    out[0] = lay.batch_first ? batch_first_from_rows(dx, T_, N, I, s.input_shape) : dx.view(s.input_shape);
  auto to_user_order = [&](const Tensor& t, const Shape& shape, int64_t W) {
    if (!permuted) return t.view(shape);
    Tensor u = empty(shape, opts);
    scatter_batch(t.data_ptr<T>(), u.data_ptr<T>(), L * D, N, W, lay.sorted_indices.data_ptr<int64_t>());
    return u;
  };
  if (dh0.defined()) out[1] = to_user_order(dh0, lay.hidden_shape, Hout);
  if (dc0.defined()) out[2] = to_user_order(dc0, lay.cell_shape, H);
  for (size_t i = 0; i < dweights.size(); ++i) out[kFirstWeight + i] = dweights[i];
  return out;
}

autograd::tensor_list RecurrentBackward::apply(autograd::tensor_list&& grads) {
  RNNKIT_CHECK(saved_ != nullptr,
               "RecurrentBackward: saved tensors were already freed (use retain_graph=true to backward twice)");
  return dispatch_floating(saved_->dtype, name().c_str(),
                           [&](auto tag) { return backward<decltype(tag)>(grads); });
}

}  // namespace

RecurrentResult recurrent_forward(const RecurrentSpec& spec, const RecurrentLayout& layout, const Tensor& input,
                                  const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights) {
  auto s = std::make_shared<Saved>();
  s->spec = spec;
  s->layout = layout;
  s->dtype = input.dtype();
  s->T = static_cast<int64_t>(layout.batch_sizes.size());
  RNNKIT_CHECK(s->T > 0, spec.node_name, ": internal error, empty batch_sizes");
  s->N = layout.batch_sizes[0];
  for (int64_t b : layout.batch_sizes) s->rows += b;
  s->D = spec.bidirectional ? 2 : 1;
  s->L = spec.num_layers;
  s->Hout = spec.proj_size > 0 ? spec.proj_size : spec.hidden_size;
  s->DH = s->D * s->Hout;
  s->per_direction = 2 + (spec.has_bias ? 2 : 0) + (spec.proj_size > 0 ? 1 : 0);
  s->input_shape = input.sizes();
  s->has_h0 = h0.defined();
  s->has_c0 = c0.defined() && spec.cell == k::CellType::LSTM;
  RNNKIT_CHECK(input.numel() == s->rows * spec.input_size, spec.node_name,
               ": internal error, input numel does not match the layout");
  RNNKIT_CHECK(weights.size() == static_cast<size_t>(s->L * s->D * s->per_direction), spec.node_name,
               ": internal error, expected ", s->L * s->D * s->per_direction, " weights, got ", weights.size());
  s->weights.reserve(weights.size());
  for (const Tensor& w : weights) s->weights.push_back(native::contiguous(w.detach()));

  std::vector<Tensor> inputs;
  inputs.reserve(kFirstWeight + weights.size());
  inputs.push_back(input);
  inputs.push_back(h0);
  inputs.push_back(c0);
  for (const Tensor& w : weights) inputs.push_back(w);
  const bool training = autograd::needs_grad(inputs);

  RecurrentResult result = dispatch_floating(s->dtype, spec.node_name, [&](auto tag) {
    return forward_impl<decltype(tag)>(s, input, h0, c0, training);
  });
  if (training) {
    auto node = std::make_shared<RecurrentBackward>(s);
    autograd::connect(node, inputs, {&result.output, &result.h_n, &result.c_n});
  }
  return result;
}

}  // namespace rnnkit::nn::detail
