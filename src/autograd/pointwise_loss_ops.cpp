// Elementwise losses as one node each: functional::mse_loss, l1_loss,
// smooth_l1_loss, binary_cross_entropy, binary_cross_entropy_with_logits.
// Input, target (and weight, pos_weight) are expanded to one shape B; per
// element the loss is w * f(x, t) and the node's backward uses
//   dL/dx = g * w * f_x(x, t),  dL/dt = g * w * f_t(x, t)
// (g = the incoming gradient, divided by numel(B) for "mean"), summed back to
// the input's and target's own shapes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "autograd/function.h"
#include "rnnkit/nn/loss.h"
#include "rnnkit/ops.h"
#include "tensor/iter.h"
#include "tensor/native.h"

namespace rnnkit::nn::functional {

namespace {

using autograd::tensor_list;

enum class Kind { MSE, L1, SmoothL1, BCE, BCEWithLogits };

struct Terms {
  double value, dx, dt;
};

double sign(double v) { return static_cast<double>((v > 0) - (v < 0)); }

// f, df/dx and df/dt of one element; pw is pos_weight (1 when absent).
Terms terms(Kind kind, double x, double t, double pw, double beta) {
  switch (kind) {
    case Kind::MSE: {
      const double d = x - t;
      return {d * d, 2 * d, -2 * d};
    }
    case Kind::L1: {
      const double d = x - t;
      return {std::abs(d), sign(d), -sign(d)};
    }
    case Kind::SmoothL1: {
      const double d = x - t, ad = std::abs(d);
      if (beta == 0.0) return {ad, sign(d), -sign(d)};
      if (ad < beta) return {0.5 * d * d / beta, d / beta, -d / beta};
      return {ad - 0.5 * beta, sign(d), -sign(d)};
    }
    case Kind::BCE: {
      // Each log is clamped to >= -100 so that x = 0 or 1 gives a finite loss.
      const double log_x = std::max(std::log(x), -100.0), log_1mx = std::max(std::log1p(-x), -100.0);
      // PyTorch's floor for the denominator is the float 1e-12f, also in float64.
      const double dx = (x - t) / std::max((1 - x) * x, static_cast<double>(1e-12f));
      return {(t - 1) * log_1mx - t * log_x, dx, std::log(1 - x) - std::log(x)};
    }
    case Kind::BCEWithLogits: {
      // (1 - t) x + (1 + (pw - 1) t) softplus(-x), softplus(-x) = log(e^-m + e^(-x-m)) + m, m = max(-x, 0).
      const double m = std::max(-x, 0.0);
      const double softplus_neg = std::log(std::exp(-m) + std::exp(-x - m)) + m;
      const double log_weight = 1 + (pw - 1) * t;
      const double sig = 1.0 / (1.0 + std::exp(-x));
      return {(1 - t) * x + log_weight * softplus_neg, (t * pw + 1 - t) * sig - t * pw, -x + (pw - 1) * softplus_neg};
    }
  }
  return {0, 0, 0};
}

std::string torch_size(const Shape& s) {
  std::ostringstream os;
  os << "torch.Size([";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "])";
  return os.str();
}

// A contiguous copy of t expanded to shape (or undefined).
Tensor expanded(const Tensor& t, const Shape& shape, const char* op, const char* what) {
  if (!t.defined()) return t;
  broadcast_shapes(t.sizes(), shape, op);
  Shape bs = broadcast_shapes(t.sizes(), shape, op);
  RNNKIT_CHECK(bs == shape, op, ": ", what, " of shape ", shape_str(t.sizes()), " does not broadcast to the shape ",
               shape_str(shape));
  return native::contiguous(t.detach().expand(shape));
}

Tensor pointwise_loss(Kind kind, const char* op, const Tensor& input, const Tensor& target, const Tensor& weight,
                      const Tensor& pos_weight, Reduction reduction, double beta) {
  check_floating(input, op, "input");
  check_floating(target, op, "target");
  RNNKIT_CHECK(target.dtype() == input.dtype(), op, ": expected target of dtype ", dtype_name(input.dtype()), ", got ",
               dtype_name(target.dtype()));
  for (const Tensor* t : {&weight, &pos_weight})
    RNNKIT_CHECK(!t->defined() || t->dtype() == input.dtype(), op, ": expected weights of dtype ",
                 dtype_name(input.dtype()), ", got ", dtype_name(t->dtype()));
  const Shape shape = broadcast_shapes(input.sizes(), target.sizes(), op);
  Tensor x = expanded(input, shape, op, "input"), t = expanded(target, shape, op, "target");
  Tensor w = expanded(weight, shape, op, "weight"), pw = expanded(pos_weight, shape, op, "pos_weight");
  const int64_t n = x.numel();
  const Dtype dtype = input.dtype();
  Tensor out = reduction == Reduction::None ? empty(shape, TensorOptions(dtype)) : Tensor();
  double total = 0;
  dispatch_floating(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data_ptr<T>(), *tp = t.data_ptr<T>();
    const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
    const T* pwp = pw.defined() ? pw.data_ptr<T>() : nullptr;
    if (kind == Kind::BCE)
      for (int64_t i = 0; i < n; ++i)
        RNNKIT_CHECK(xp[i] >= 0 && xp[i] <= 1, "all elements of input should be between 0 and 1");
    T* op_out = out.defined() ? out.data_ptr<T>() : nullptr;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const double v =
          (wp ? static_cast<double>(wp[i]) : 1.0) * terms(kind, xp[i], tp[i], pwp ? pwp[i] : 1.0, beta).value;
      if (op_out) op_out[i] = static_cast<T>(v);
      total += v;
    }
  });
  if (reduction == Reduction::Sum) out = scalar_tensor(total, TensorOptions(dtype));
  if (reduction == Reduction::Mean)
    out = scalar_tensor(n == 0 ? std::numeric_limits<double>::quiet_NaN() : total / static_cast<double>(n),
                        TensorOptions(dtype));
  const bool need_x = input.requires_grad(), need_t = target.requires_grad();
  const Shape in_shape = input.sizes(), target_shape = target.sizes();
  return autograd::record(op, {input, target}, out,
                          [kind, x, t, w, pw, reduction, beta, n, dtype, need_x, need_t, in_shape, target_shape,
                           op](const tensor_list& g) -> tensor_list {
                            Tensor gx = need_x ? empty(x.sizes(), TensorOptions(dtype)) : Tensor();
                            Tensor gt = need_t ? empty(x.sizes(), TensorOptions(dtype)) : Tensor();
                            Tensor ge = reduction == Reduction::None ? native::contiguous(g[0]) : Tensor();
                            double scale = reduction == Reduction::None ? 1.0 : g[0].item();
                            if (reduction == Reduction::Mean) scale /= static_cast<double>(n);
                            dispatch_floating(dtype, op, [&](auto tag) {
                              using T = decltype(tag);
                              const T *xp = x.data_ptr<T>(), *tp = t.data_ptr<T>();
                              const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
                              const T* pwp = pw.defined() ? pw.data_ptr<T>() : nullptr;
                              const T* gp = ge.defined() ? ge.data_ptr<T>() : nullptr;
                              T* gxp = gx.defined() ? gx.data_ptr<T>() : nullptr;
                              T* gtp = gt.defined() ? gt.data_ptr<T>() : nullptr;
#pragma omp parallel for schedule(static) if (n > 65536)
                              for (int64_t i = 0; i < n; ++i) {
                                const Terms d = terms(kind, xp[i], tp[i], pwp ? pwp[i] : 1.0, beta);
                                const double c =
                                    (gp ? static_cast<double>(gp[i]) : scale) * (wp ? static_cast<double>(wp[i]) : 1.0);
                                if (gxp) gxp[i] = static_cast<T>(c * d.dx);
                                if (gtp) gtp[i] = static_cast<T>(c * d.dt);
                              }
                            });
                            if (gx.defined()) gx = autograd::sum_to(gx, in_shape);
                            if (gt.defined()) gt = autograd::sum_to(gt, target_shape);
                            return {gx, gt};
                          });
}

}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, const MSELossFuncOptions& options) {
  return pointwise_loss(Kind::MSE, "MseLossBackward0", input, target, {}, {}, options.reduction(), 0);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, const L1LossFuncOptions& options) {
  return pointwise_loss(Kind::L1, "L1LossBackward0", input, target, {}, {}, options.reduction(), 0);
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, const SmoothL1LossFuncOptions& options) {
  RNNKIT_CHECK(options.beta() >= 0, "smooth_l1_loss does not support negative values for beta.");
  return pointwise_loss(Kind::SmoothL1, "SmoothL1LossBackward0", input, target, {}, {}, options.reduction(),
                        options.beta());
}

Tensor binary_cross_entropy(const Tensor& input, const Tensor& target, const BinaryCrossEntropyFuncOptions& options) {
  check_defined(input, "binary_cross_entropy", "input");
  check_defined(target, "binary_cross_entropy", "target");
  RNNKIT_CHECK(target.sizes() == input.sizes(), "Using a target size (", torch_size(target.sizes()),
               ") that is different to the input size (", torch_size(input.sizes()),
               ") is deprecated. Please ensure they have the same size.");
  return pointwise_loss(Kind::BCE, "BinaryCrossEntropyBackward0", input, target, options.weight(), {},
                        options.reduction(), 0);
}

Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                        const BinaryCrossEntropyWithLogitsFuncOptions& options) {
  check_defined(input, "binary_cross_entropy_with_logits", "input");
  check_defined(target, "binary_cross_entropy_with_logits", "target");
  RNNKIT_CHECK(target.sizes() == input.sizes(), "Target size (", torch_size(target.sizes()),
               ") must be the same as input size (", torch_size(input.sizes()), ")");
  return pointwise_loss(Kind::BCEWithLogits, "BinaryCrossEntropyWithLogitsBackward0", input, target, options.weight(),
                        options.pos_weight(), options.reduction(), 0);
}

}  // namespace rnnkit::nn::functional
