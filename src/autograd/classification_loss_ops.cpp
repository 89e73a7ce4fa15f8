// Classification losses over a class dimension: functional::nll_loss and
// functional::cross_entropy (class-index targets: log_softmax + NLL + label
// smoothing fused in one node; class-probability targets: composed from ops).
//
// Layout: input [N, C, inner] after folding trailing dims (1-D input: N = 1,
// inner = 1); position i = (n, r) has target t_i and class scores
// x[n, :, r] (class stride `inner`). With w_c the class weight (1 when
// absent), W = sum_c w_c, lse_i = log sum_c exp x_c, logp_c = x_c - lse_i:
//   nll_i    = -w_t logp_t                      (0 where t_i == ignore_index)
//   smooth_i = -sum_c w_c logp_c                (0 where ignored)
//   loss_i   = (1 - eps) nll_i + eps / C * smooth_i
// "mean": both parts are divided by the sum of w_t over the non-ignored
// positions (their count without a weight), as PyTorch 1.13 does.
// Backward (cross entropy), p_c = exp(logp_c):
//   dx_c = a_i w_t (p_c - [c == t]) + b_i (p_c W - w_c)
// with a_i, b_i the incoming gradient times the two parts' scales.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "autograd/function.h"
#include "rnnkit/nn/loss.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"
#include "tensor/vector_rows.h"

namespace rnnkit::nn {

Reduction reduction_from_string(const std::string& reduction) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  throw Error(reduction + " is not a valid value for reduction");
}

namespace functional {

namespace {

using autograd::tensor_list;

struct ClassLayout {
  int64_t N = 1, C = 1, inner = 1;
  Shape out_shape;  // shape of the "none" result
  int64_t positions() const { return N * inner; }
};

// Validates input/target/weight as PyTorch's nll_loss_nd and returns the layout.
ClassLayout class_layout(const Tensor& input, const Tensor& target, const Tensor& weight) {
  check_floating(input, "nll_loss", "input");
  check_defined(target, "nll_loss", "target");
  const int64_t dim = input.dim();
  RNNKIT_CHECK(dim >= 1, "Expected 1 or more dimensions (got ", dim, ")");
  if (dim != 1 && target.dim() >= 1)
    RNNKIT_CHECK(input.size(0) == target.size(0), "Expected input batch_size (", input.size(0),
                 ") to match target batch_size (", target.size(0), ").");
  RNNKIT_CHECK(target.dtype() == kInt64, "expected scalar type Long but found ", dtype_name(target.dtype()));
  ClassLayout l;
  if (dim <= 2) {
    RNNKIT_CHECK(target.dim() <= 1, "0D or 1D target tensor expected, multi-target not supported");
    const bool no_batch_dim = dim == 1 && target.dim() == 0;
    RNNKIT_CHECK(no_batch_dim || (dim == 2 && target.dim() == 1),
                 "size mismatch (got input: ", shape_str(input.sizes()), ", target: ", shape_str(target.sizes()), ")");
    l.N = dim == 1 ? 1 : input.size(0);
    l.C = dim == 1 ? input.size(0) : input.size(1);
    l.out_shape = target.sizes();
  } else if (dim == 4) {
    RNNKIT_CHECK(target.dim() == 3,
                 "only batches of spatial targets supported (3D tensors) but got targets of dimension: ", target.dim());
    RNNKIT_CHECK(input.size(0) == target.size(0) && input.size(2) == target.size(1) && input.size(3) == target.size(2),
                 "size mismatch (got input: ", shape_str(input.sizes()), " , target: ", shape_str(target.sizes()));
  } else {
    Shape expected{input.size(0)};
    expected.insert(expected.end(), input.sizes().begin() + 2, input.sizes().end());
    RNNKIT_CHECK(target.sizes() == expected, "Expected target size ", shape_str(expected), ", got ",
                 shape_str(target.sizes()));
  }
  if (dim >= 3) {
    l.N = input.size(0);
    l.C = input.size(1);
    for (int64_t d = 2; d < dim; ++d) l.inner *= input.size(d);
    l.out_shape = target.sizes();
  }
  if (weight.defined()) {
    RNNKIT_CHECK(weight.dim() == 1 && weight.numel() == l.C, "weight tensor should be defined either for all ", l.C,
                 " classes or no classes but got weight tensor of shape: ", shape_str(weight.sizes()));
    RNNKIT_CHECK(weight.dtype() == input.dtype(), "expected scalar type ", dtype_name(input.dtype()), " but found ",
                 dtype_name(weight.dtype()), " (weight)");
  }
  return l;
}

struct LossConfig {
  bool log_softmax = false;  // cross entropy (true) or nll on log-probabilities (false)
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::Mean;
};

// Contiguous float rows (inner == 1) take their log-sum-exp and softmax
// through the vector kernels (tensor/vector_rows.h): the log-softmax of a
// language model's output over 10^4 classes spent most of its time in the
// scalar expf and in one chain of additions. Cross entropy over 700 x 10000 on
// two Zen 5 cores, forward / backward: 11.6-11.9 / 5.4-6.2 ms -> 1.5-1.6 /
// 1.2-1.3 (AVX2 kernels: 2.0 / 1.7-1.8).

// Forward sums and per-position values. nll[i], smooth[i] are the unscaled
// parts; ignored positions hold 0. lse[i] is saved for backward.
template <typename T>
void class_loss_forward(double* nll, double* smooth, T* lse, const T* x, const int64_t* target, const T* w,
                        const ClassLayout& l, const LossConfig& cfg) {
  const int64_t C = l.C, inner = l.inner;
  const bool want_smooth = cfg.label_smoothing > 0;
  double W = 0;
  for (int64_t c = 0; c < C; ++c) W += w ? static_cast<double>(w[c]) : 1.0;
  // Bounds are checked first so the parallel loop cannot throw.
  for (int64_t i = 0; i < l.positions(); ++i) {
    const int64_t t = target[i];
    RNNKIT_CHECK(t == cfg.ignore_index || (t >= 0 && t < C), "Target ", t, " is out of bounds.");
  }
#pragma omp parallel for schedule(static) if (l.positions() * C > 32768)
  for (int64_t i = 0; i < l.positions(); ++i) {
    const int64_t n = i / inner, r = i % inner;
    const T* row = x + n * C * inner + r;  // row[c * inner]
    double log_norm = 0;
    if (cfg.log_softmax) {
      T m = -std::numeric_limits<T>::infinity();
      double s = 0;
      if (!(inner == 1 && native::exp_sum(row, C, &m, &s))) {
        for (int64_t c = 0; c < C; ++c) m = std::max(m, row[c * inner]);
        if (m == -std::numeric_limits<T>::infinity()) m = 0;  // +inf stays: NaN, as PyTorch
        for (int64_t c = 0; c < C; ++c) s += std::exp(row[c * inner] - m);
      }
      log_norm = m + std::log(s);
      lse[i] = static_cast<T>(log_norm);
    }
    const int64_t t = target[i];
    if (t == cfg.ignore_index) {
      nll[i] = 0;
      smooth[i] = 0;
      continue;
    }
    const double wt = w ? static_cast<double>(w[t]) : 1.0;
    nll[i] = -wt * (row[t * inner] - log_norm);
    if (want_smooth) {
      double wx = 0;
      for (int64_t c = 0; c < C; ++c) wx += (w ? static_cast<double>(w[c]) : 1.0) * row[c * inner];
      smooth[i] = -(wx - log_norm * W);
    }
  }
}

// dx (= written) from per-position coefficients a[i] (nll part) and b[i] (smooth part).
template <typename T>
void class_loss_backward(T* dx, const double* a, const double* b, const T* x, const T* lse, const int64_t* target,
                         const T* w, const ClassLayout& l, const LossConfig& cfg) {
  const int64_t C = l.C, inner = l.inner;
  double W = 0;
  for (int64_t c = 0; c < C; ++c) W += w ? static_cast<double>(w[c]) : 1.0;
#pragma omp parallel for schedule(static) if (l.positions() * C > 32768)
  for (int64_t i = 0; i < l.positions(); ++i) {
    const int64_t n = i / inner, r = i % inner;
    const T* row = x + n * C * inner + r;
    T* drow = dx + n * C * inner + r;
    const int64_t t = target[i];
    if (t == cfg.ignore_index) {
      for (int64_t c = 0; c < C; ++c) drow[c * inner] = T(0);
      continue;
    }
    const double wt = w ? static_cast<double>(w[t]) : 1.0;
    const double at = a[i] * wt;
    if (!cfg.log_softmax) {
      for (int64_t c = 0; c < C; ++c) drow[c * inner] = T(0);
      drow[t * inner] = static_cast<T>(-at);
      continue;
    }
    const T m = lse[i];
    const double bi = b ? b[i] : 0.0;
    if (bi == 0.0 && inner == 1) {
      const T at_t = static_cast<T>(at);
      if (!native::scaled_exp(row, C, m, at_t, drow))
        for (int64_t c = 0; c < C; ++c) drow[c] = at_t * std::exp(row[c] - m);
    } else if (inner == 1 && native::scaled_exp(row, C, m, T(1), drow)) {
      // Label smoothing: the probabilities by the vector exp, combined in double.
      for (int64_t c = 0; c < C; ++c) {
        const double p = drow[c];
        drow[c] = static_cast<T>(at * p + bi * (p * W - (w ? static_cast<double>(w[c]) : 1.0)));
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const double p = std::exp(static_cast<double>(row[c * inner] - m));
        drow[c * inner] = static_cast<T>(at * p + bi * (p * W - (w ? static_cast<double>(w[c]) : 1.0)));
      }
    }
    drow[t * inner] = static_cast<T>(drow[t * inner] - at);
  }
}

// nll_loss / cross_entropy with class-index targets.
Tensor class_index_loss(const char* node_name, const Tensor& input, const Tensor& target, const Tensor& weight,
                        const LossConfig& cfg) {
  const ClassLayout l = class_layout(input, target, weight);
  const Dtype dtype = input.dtype();
  Tensor xc = native::contiguous(input.detach());
  Tensor tc = native::contiguous(target.detach());
  Tensor wc = weight.defined() ? native::contiguous(weight.detach()) : Tensor();
  const int64_t M = l.positions();
  Tensor lse = empty({M}, TensorOptions(dtype));
  std::vector<double> nll(static_cast<size_t>(M)), smooth(static_cast<size_t>(M), 0.0);
  dispatch_floating(dtype, node_name, [&](auto tag) {
    using T = decltype(tag);
    class_loss_forward<T>(nll.data(), smooth.data(), lse.data_ptr<T>(), xc.data_ptr<T>(), tc.data_ptr<int64_t>(),
                          wc.defined() ? wc.data_ptr<T>() : nullptr, l, cfg);
  });
  // Scales of the two parts: (1 - eps) * nll / D1 + eps / C * smooth / D2.
  const double eps = cfg.label_smoothing;
  double nll_scale = 1.0 - eps, smooth_scale = eps / static_cast<double>(l.C);
  if (cfg.reduction == Reduction::Mean) {
    double total_weight = 0;
    const int64_t* tp = tc.const_data_ptr<int64_t>();
    const std::vector<double> wv = wc.defined() ? wc.to_vector<double>() : std::vector<double>();
    for (int64_t i = 0; i < M; ++i)
      if (tp[i] != cfg.ignore_index) total_weight += wc.defined() ? wv[static_cast<size_t>(tp[i])] : 1.0;
    nll_scale /= total_weight;
    smooth_scale /= total_weight;
  }
  Tensor out;
  if (cfg.reduction == Reduction::None) {
    std::vector<double> v(static_cast<size_t>(M));
    for (int64_t i = 0; i < M; ++i) v[i] = nll_scale * nll[i] + smooth_scale * smooth[i];
    out = from_vector(v, {M}).reshape(l.out_shape).to(dtype);
  } else {
    double sum_nll = 0, sum_smooth = 0;
    for (int64_t i = 0; i < M; ++i) {
      sum_nll += nll[i];
      sum_smooth += smooth[i];
    }
    double total = nll_scale * sum_nll;
    if (eps > 0) total += smooth_scale * sum_smooth;
    out = scalar_tensor(total, TensorOptions(dtype));
  }
  const bool want_smooth = eps > 0;
  return autograd::record(
      node_name, {input}, out,
      [xc, tc, wc, lse, l, cfg, nll_scale, smooth_scale, want_smooth, dtype](const tensor_list& g) -> tensor_list {
        const int64_t M = l.positions();
        std::vector<double> a(static_cast<size_t>(M)), b(want_smooth ? static_cast<size_t>(M) : 0);
        if (cfg.reduction == Reduction::None) {
          const std::vector<double> gv = native::contiguous(g[0]).to_vector<double>();
          for (int64_t i = 0; i < M; ++i) {
            a[i] = nll_scale * gv[i];
            if (want_smooth) b[i] = smooth_scale * gv[i];
          }
        } else {
          const double gs = g[0].item();
          std::fill(a.begin(), a.end(), nll_scale * gs);
          std::fill(b.begin(), b.end(), smooth_scale * gs);
        }
        Tensor dx = empty(xc.sizes(), TensorOptions(dtype));
        dispatch_floating(dtype, "cross_entropy backward", [&](auto tag) {
          using T = decltype(tag);
          class_loss_backward<T>(dx.data_ptr<T>(), a.data(), want_smooth ? b.data() : nullptr, xc.data_ptr<T>(),
                                 cfg.log_softmax ? lse.data_ptr<T>() : nullptr, tc.data_ptr<int64_t>(),
                                 wc.defined() ? wc.data_ptr<T>() : nullptr, l, cfg);
        });
        return {dx};
      });
}

// cross_entropy with class-probability targets (same shape as input), composed from ops.
Tensor class_probability_loss(const Tensor& input, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                              Reduction reduction, double label_smoothing) {
  RNNKIT_CHECK(target.is_floating_point(), "Expected floating point type for target with class probabilities, got ",
               target.dtype() == kInt64 ? "Long" : dtype_name(target.dtype()));
  RNNKIT_CHECK(ignore_index < 0, "ignore_index is not supported for floating point target");
  RNNKIT_CHECK(target.dtype() == input.dtype(), "cross_entropy: expected target of dtype ", dtype_name(input.dtype()),
               ", got ", dtype_name(target.dtype()));
  const int64_t class_dim = input.dim() == 1 ? 0 : 1;
  const int64_t C = input.size(class_dim);
  Tensor logp = rnnkit::log_softmax(input, class_dim);
  Tensor t = label_smoothing > 0
                 ? rnnkit::add(rnnkit::mul(target, 1.0 - label_smoothing), label_smoothing / static_cast<double>(C))
                 : target;
  Tensor prod = rnnkit::mul(logp, t);
  if (weight.defined()) {
    RNNKIT_CHECK(weight.dim() == 1 && weight.numel() == C, "weight tensor should be defined either for all ", C,
                 " classes or no classes but got weight tensor of shape: ", shape_str(weight.sizes()));
    Shape wshape(static_cast<size_t>(input.dim()), 1);
    wshape[class_dim] = C;
    prod = rnnkit::mul(prod, weight.reshape(wshape));
  }
  Tensor loss = rnnkit::neg(rnnkit::sum(prod, {class_dim}));
  switch (reduction) {
    case Reduction::None:
      return loss;
    case Reduction::Sum:
      return rnnkit::sum(loss);
    case Reduction::Mean:
      if (input.numel() == 0) return rnnkit::mul(rnnkit::sum(loss), std::numeric_limits<double>::quiet_NaN());
      return rnnkit::div(rnnkit::sum(loss), static_cast<double>(input.numel() / C));
  }
  return loss;
}

}  // namespace

Tensor nll_loss(const Tensor& input, const Tensor& target, const NLLLossFuncOptions& options) {
  LossConfig cfg;
  cfg.ignore_index = options.ignore_index();
  cfg.reduction = options.reduction();
  return class_index_loss("NllLossBackward0", input, target, options.weight(), cfg);
}

Tensor cross_entropy(const Tensor& input, const Tensor& target, const CrossEntropyFuncOptions& options) {
  check_floating(input, "cross_entropy", "input");
  check_defined(target, "cross_entropy", "target");
  const double eps = options.label_smoothing();
  RNNKIT_CHECK(eps >= 0.0 && eps <= 1.0, "label_smoothing must be between 0.0 and 1.0. Got: ", eps);
  if (input.sizes() == target.sizes())
    return class_probability_loss(input, target, options.weight(), options.ignore_index(), options.reduction(), eps);
  LossConfig cfg;
  cfg.log_softmax = true;
  cfg.ignore_index = options.ignore_index();
  cfg.label_smoothing = eps;
  cfg.reduction = options.reduction();
  return class_index_loss("CrossEntropyLossBackward0", input, target, options.weight(), cfg);
}

}  // namespace functional
}  // namespace rnnkit::nn
