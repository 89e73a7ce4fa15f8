// Differentiable elementwise ops, comparisons and reductions.
#include <cmath>
#include <limits>

#include "autograd/function.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit {

using autograd::record;
using autograd::sum_to;
using autograd::tensor_list;
using native::Binary;
using native::Unary;

namespace {

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  check_defined(a, op, "input");
  check_defined(b, op, "other");
  RNNKIT_CHECK(a.dtype() == b.dtype(), op, ": expected both operands to have the same dtype, got ",
               dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
}

Tensor scalar_like(const Tensor& t, double v) { return full({}, v, TensorOptions(t.dtype())); }

}  // namespace

// ---------------------------------------------------------------- binary

Tensor add(const Tensor& a, const Tensor& b, double alpha) {
  check_same_dtype(a, b, "add");
  Tensor out = native::add_scaled(a, b, alpha, "add");
  const Shape sa = a.sizes(), sb = b.sizes();
  return record("AddBackward0", {a, b}, out, [sa, sb, alpha](const tensor_list& g) -> tensor_list {
    Tensor gb = sum_to(g[0], sb);
    return {sum_to(g[0], sa), alpha == 1.0 ? gb : native::scalar_op(gb, alpha, Binary::Mul)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b, double alpha) { return add(a, b, -alpha); }

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "mul");
  Tensor out = native::binary(a, b, Binary::Mul, "mul");
  Tensor ad = a.detach(), bd = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return record("MulBackward0", {a, b}, out, [ad, bd, need_a, need_b](const tensor_list& g) -> tensor_list {
    Tensor ga, gb;
    if (need_a) ga = sum_to(native::binary(g[0], bd, Binary::Mul, "mul"), ad.sizes());
    if (need_b) gb = sum_to(native::binary(g[0], ad, Binary::Mul, "mul"), bd.sizes());
    return {ga, gb};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "div");
  Tensor out = native::binary(a, b, Binary::Div, "div");
  Tensor bd = b.detach(), od = out.detach();
  const Shape sa = a.sizes();
  const bool need_b = b.requires_grad();
  return record("DivBackward0", {a, b}, out, [bd, od, sa, need_b](const tensor_list& g) -> tensor_list {
    Tensor ga = native::binary(g[0], bd, Binary::Div, "div");
    Tensor gb;
    // d(a/b)/db = -out / b
    if (need_b) gb = sum_to(native::unary(native::binary(ga, od, Binary::Mul, "div"), Unary::Neg), bd.sizes());
    return {sum_to(ga, sa), gb};
  });
}

Tensor add(const Tensor& a, double b) { return add(a, scalar_like(a, b)); }
Tensor mul(const Tensor& a, double b) { return mul(a, scalar_like(a, b)); }
Tensor div(const Tensor& a, double b) { return div(a, scalar_like(a, b)); }
Tensor rsub(const Tensor& a, double b) { return sub(scalar_like(a, b), a); }

static Tensor minmax_binary(const Tensor& a, const Tensor& b, bool is_max) {
  const char* op = is_max ? "maximum" : "minimum";
  check_same_dtype(a, b, op);
  Tensor out = native::binary(a, b, is_max ? Binary::Max : Binary::Min, op);
  // Gradient goes to the selected operand; ties split evenly like PyTorch.
  Tensor ad = a.detach(), bd = b.detach();
  return record(is_max ? "MaximumBackward0" : "MinimumBackward0", {a, b}, out,
                [ad, bd, is_max](const tensor_list& g) -> tensor_list {
                  Tensor a_wins = native::binary(ad, bd, is_max ? Binary::Gt : Binary::Lt, "max");
                  Tensor tie = native::binary(ad, bd, Binary::Eq, "max");
                  Tensor one = scalar_like(ad, 1.0), half = scalar_like(ad, 0.5), zero = scalar_like(ad, 0.0);
                  Tensor wa = native::where(a_wins, one, native::where(tie, half, zero));
                  Tensor wb = native::binary(one, wa, Binary::Sub, "max");
                  return {sum_to(native::binary(g[0], wa, Binary::Mul, "max"), ad.sizes()),
                          sum_to(native::binary(g[0], wb, Binary::Mul, "max"), bd.sizes())};
                });
}

Tensor maximum(const Tensor& a, const Tensor& b) { return minmax_binary(a, b, true); }
Tensor minimum(const Tensor& a, const Tensor& b) { return minmax_binary(a, b, false); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double b) { return add(a, b); }
Tensor operator-(const Tensor& a, double b) { return add(a, -b); }
Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
Tensor operator/(const Tensor& a, double b) { return div(a, b); }
Tensor operator+(double a, const Tensor& b) { return add(b, a); }
Tensor operator-(double a, const Tensor& b) { return rsub(b, a); }
Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
Tensor operator-(const Tensor& a) { return neg(a); }

// ---------------------------------------------------------------- unary

namespace {

// out = f(x); dx = g * dfdx where dfdx is computed from (x, out).
template <typename Deriv>
Tensor unary_op(const Tensor& x, Unary op, const char* name, Deriv deriv) {
  check_floating(x, name, "input");
  Tensor out = native::unary(x, op);
  Tensor xd = x.detach(), od = out.detach();
  return record(name, {x}, out, [xd, od, deriv](const tensor_list& g) -> tensor_list {
    return {native::binary(g[0], deriv(xd, od), Binary::Mul, "unary backward")};
  });
}

}  // namespace

Tensor neg(const Tensor& x) {
  check_floating(x, "neg", "input");
  return record("NegBackward0", {x}, native::unary(x, Unary::Neg),
                [](const tensor_list& g) -> tensor_list { return {native::unary(g[0], Unary::Neg)}; });
}

Tensor exp(const Tensor& x) {
  return unary_op(x, Unary::Exp, "ExpBackward0", [](const Tensor&, const Tensor& y) { return y; });
}

Tensor log(const Tensor& x) {
  return unary_op(x, Unary::Log, "LogBackward0", [](const Tensor& xv, const Tensor&) {
    return native::binary(scalar_like(xv, 1.0), xv, Binary::Div, "log");
  });
}

Tensor tanh(const Tensor& x) {
  return unary_op(x, Unary::Tanh, "TanhBackward0", [](const Tensor&, const Tensor& y) {
    return native::binary(scalar_like(y, 1.0), native::binary(y, y, Binary::Mul, "tanh"), Binary::Sub, "tanh");
  });
}

Tensor sigmoid(const Tensor& x) {
  return unary_op(x, Unary::Sigmoid, "SigmoidBackward0", [](const Tensor&, const Tensor& y) {
    return native::binary(y, native::binary(scalar_like(y, 1.0), y, Binary::Sub, "sigmoid"), Binary::Mul,
                          "sigmoid");
  });
}

Tensor relu(const Tensor& x) {
  return unary_op(x, Unary::Relu, "ReluBackward0", [](const Tensor&, const Tensor& y) {
    return native::binary(y, scalar_like(y, 0.0), Binary::Gt, "relu").to(y.dtype());
  });
}

Tensor sqrt(const Tensor& x) {
  return unary_op(x, Unary::Sqrt, "SqrtBackward0", [](const Tensor&, const Tensor& y) {
    return native::binary(scalar_like(y, 0.5), y, Binary::Div, "sqrt");
  });
}

Tensor abs(const Tensor& x) {
  return unary_op(x, Unary::Abs, "AbsBackward0",
                  [](const Tensor& xv, const Tensor&) { return native::unary(xv, Unary::Sign); });
}

Tensor pow(const Tensor& x, double exponent) {
  check_floating(x, "pow", "input");
  Tensor out = native::pow_scalar(x, exponent);
  Tensor xd = x.detach();
  return record("PowBackward0", {x}, out, [xd, exponent](const tensor_list& g) -> tensor_list {
    if (exponent == 0.0) return {zeros_like(xd)};
    Tensor d = native::scalar_op(native::pow_scalar(xd, exponent - 1.0), exponent, Binary::Mul);
    return {native::binary(g[0], d, Binary::Mul, "pow")};
  });
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  check_floating(x, "clamp", "input");
  RNNKIT_CHECK(!(lo > hi), "clamp: min (", lo, ") must be <= max (", hi, ")");
  Tensor out = native::clamp(x, lo, hi);
  Tensor xd = x.detach();
  return record("ClampBackward1", {x}, out, [xd, lo, hi](const tensor_list& g) -> tensor_list {
    Tensor inside = native::binary(native::binary(xd, scalar_like(xd, lo), Binary::Ge, "clamp").to(xd.dtype()),
                                   native::binary(xd, scalar_like(xd, hi), Binary::Le, "clamp").to(xd.dtype()),
                                   Binary::Mul, "clamp");
    return {native::binary(g[0], inside, Binary::Mul, "clamp")};
  });
}

// ---------------------------------------------------------------- comparisons

Tensor eq(const Tensor& a, const Tensor& b) { return native::binary(a, b, Binary::Eq, "eq"); }
Tensor ne(const Tensor& a, const Tensor& b) { return native::binary(a, b, Binary::Ne, "ne"); }
Tensor lt(const Tensor& a, const Tensor& b) { return native::binary(a, b, Binary::Lt, "lt"); }
Tensor le(const Tensor& a, const Tensor& b) { return native::binary(a, b, Binary::Le, "le"); }
Tensor gt(const Tensor& a, const Tensor& b) { return native::binary(a, b, Binary::Gt, "gt"); }
Tensor ge(const Tensor& a, const Tensor& b) { return native::binary(a, b, Binary::Ge, "ge"); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_like(a, b)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_like(a, b)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_like(a, b)); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Tensor out = native::where(cond, a, b);
  Tensor c = cond.detach();
  const Shape sa = a.sizes(), sb = b.sizes();
  return record("WhereBackward0", {a, b}, out, [c, sa, sb](const tensor_list& g) -> tensor_list {
    Tensor zero = scalar_like(g[0], 0.0);
    return {sum_to(native::where(c, g[0], zero), sa), sum_to(native::where(c, zero, g[0]), sb)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_defined(x, "masked_fill", "input");
  check_defined(mask, "masked_fill", "mask");
  RNNKIT_CHECK(mask.dtype() == kBool, "masked_fill: only supports boolean masks, but got mask with dtype ",
               dtype_name(mask.dtype()));
  Tensor out = native::where(mask, scalar_like(x, value), x);
  RNNKIT_CHECK(out.sizes() == x.sizes(), "masked_fill: mask of shape ", shape_str(mask.sizes()),
               " does not broadcast to the input's shape ", shape_str(x.sizes()));
  Tensor m = mask.detach();
  return record("MaskedFillBackward0", {x}, out, [m](const tensor_list& g) -> tensor_list {
    return {native::where(m, scalar_like(g[0], 0.0), g[0])};
  });
}

// ---------------------------------------------------------------- reductions

Tensor sum(const Tensor& x) { return sum(x, {}, false); }

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  check_defined(x, "sum", "input");
  Tensor out = native::sum(x, dims, keepdim);
  const Shape in_shape = x.sizes();
  // Shape of the result with keepdim, for broadcasting the gradient back.
  Shape kept = in_shape;
  for (size_t d = 0; d < kept.size(); ++d) {
    bool reduced = dims.empty();
    for (int64_t r : dims) reduced = reduced || wrap_dim(r, x.dim(), "sum") == static_cast<int64_t>(d);
    if (reduced) kept[d] = 1;
  }
  return record("SumBackward1", {x}, out, [in_shape, kept](const tensor_list& g) -> tensor_list {
    return {native::contiguous(g[0].reshape(kept).expand(in_shape))};
  });
}

Tensor mean(const Tensor& x) { return mean(x, {}, false); }

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  check_floating(x, "mean", "input");
  Tensor s = sum(x, dims, keepdim);
  const int64_t count = s.numel() == 0 ? 0 : x.numel() / std::max<int64_t>(s.numel(), 1);
  return div(s, static_cast<double>(count));
}

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) {
  native::MaxResult r = native::max_dim(x, dim, keepdim, false);
  const Shape in_shape = x.sizes();
  const int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), "max");
  Tensor idx = r.indices;
  const bool keep = keepdim;
  Tensor values = record("MaxBackward0", {x}, r.values, [in_shape, d, idx, keep](const tensor_list& g) -> tensor_list {
    if (in_shape.empty()) return {g[0]};
    Tensor gi = keep ? g[0] : g[0].unsqueeze(d);
    Tensor ii = keep ? idx : idx.unsqueeze(d);
    return {native::scatter_add(in_shape, d, ii, gi)};
  });
  return {values, r.indices};
}

ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) {
  native::MaxResult r = native::max_dim(x, dim, keepdim, true);
  const Shape in_shape = x.sizes();
  const int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), "min");
  Tensor idx = r.indices;
  const bool keep = keepdim;
  Tensor values = record("MinBackward0", {x}, r.values, [in_shape, d, idx, keep](const tensor_list& g) -> tensor_list {
    if (in_shape.empty()) return {g[0]};
    Tensor gi = keep ? g[0] : g[0].unsqueeze(d);
    Tensor ii = keep ? idx : idx.unsqueeze(d);
    return {native::scatter_add(in_shape, d, ii, gi)};
  });
  return {values, r.indices};
}

static Tensor reduce_all_minmax(const Tensor& x, bool is_min) {
  check_defined(x, is_min ? "min" : "max", "input");
  RNNKIT_CHECK(x.numel() > 0, is_min ? "min" : "max",
               "(): Expected reduction dim to be specified for input.numel() == 0. Specify the reduction dim with the 'dim' argument.");
  Tensor flat = x.reshape({-1});
  return is_min ? min(flat, 0, false).values : max(flat, 0, false).values;
}

Tensor max(const Tensor& x) { return reduce_all_minmax(x, false); }
Tensor min(const Tensor& x) { return reduce_all_minmax(x, true); }
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return native::max_dim(x, dim, keepdim, false).indices; }
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) { return native::max_dim(x, dim, keepdim, true).indices; }

Tensor norm(const Tensor& x, double p) {
  check_floating(x, "norm", "input");
  if (std::isinf(p)) return p > 0 ? max(abs(x)) : min(abs(x));
  if (p == 1.0) return sum(abs(x));
  if (p == 2.0) return sqrt(sum(mul(x, x)));
  return pow(sum(pow(abs(x), p)), 1.0 / p);
}

// ---------------------------------------------------------------- Tensor methods

Tensor Tensor::sum() const { return rnnkit::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return rnnkit::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return rnnkit::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const { return rnnkit::mean(*this, dims, keepdim); }
Tensor Tensor::matmul(const Tensor& other) const { return rnnkit::matmul(*this, other); }
Tensor Tensor::exp() const { return rnnkit::exp(*this); }
Tensor Tensor::log() const { return rnnkit::log(*this); }
Tensor Tensor::tanh() const { return rnnkit::tanh(*this); }
Tensor Tensor::sigmoid() const { return rnnkit::sigmoid(*this); }
Tensor Tensor::relu() const { return rnnkit::relu(*this); }
Tensor Tensor::pow(double e) const { return rnnkit::pow(*this, e); }
Tensor Tensor::sqrt() const { return rnnkit::sqrt(*this); }
Tensor Tensor::abs() const { return rnnkit::abs(*this); }
Tensor Tensor::neg() const { return rnnkit::neg(*this); }
Tensor Tensor::softmax(int64_t dim) const { return rnnkit::softmax(*this, dim); }
Tensor Tensor::log_softmax(int64_t dim) const { return rnnkit::log_softmax(*this, dim); }
Tensor Tensor::max() const { return rnnkit::max(*this); }
Tensor Tensor::min() const { return rnnkit::min(*this); }
Tensor Tensor::argmax(int64_t dim, bool keepdim) const { return rnnkit::argmax(*this, dim, keepdim); }
Tensor Tensor::norm(double p) const { return rnnkit::norm(*this, p); }

}  // namespace rnnkit
