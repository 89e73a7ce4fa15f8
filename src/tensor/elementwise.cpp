// Elementwise compute (no autograd): copies with broadcasting and dtype
// conversion, unary maps, binary ops with broadcasting, where.
#include <algorithm>
#include <cmath>

#include "tensor/iter.h"
#include "tensor/native.h"
#include "tensor/vector_rows.h"

namespace rnnkit {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    RNNKIT_CHECK(da == db || da == 1 || db == 1, op, ": The size of tensor a (", da,
                 ") must match the size of tensor b (", db, ") at non-singleton dimension ", i,
                 " (shapes ", shape_str(a), " and ", shape_str(b), ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  const size_t n = shape.size();
  const size_t lead = n - t.sizes().size();
  Shape st(n, 0);
  for (size_t i = lead; i < n; ++i) st[i] = t.sizes()[i - lead] == 1 ? 0 : t.strides()[i - lead];
  return st;
}

namespace native {

void copy_into(const Tensor& dst, const Tensor& src) {
  const Shape& shape = dst.sizes();
  std::array<Shape, 2> strides{dst.strides(), broadcast_strides(src, shape)};
  dispatch_all(dst.dtype(), "copy_", [&](auto dtag) {
    using D = decltype(dtag);
    D* d = static_cast<D*>(dst.raw_data());
    dispatch_all(src.dtype(), "copy_", [&](auto stag) {
      using S = decltype(stag);
      const S* s = static_cast<const S*>(src.const_raw_data());
      nd_loop<2>(shape, strides, [&](const std::array<int64_t, 2>& off, int64_t n,
                                     const std::array<int64_t, 2>& inner) {
        D* dp = d + off[0];
        const S* sp = s + off[1];
        if (inner[0] == 1 && inner[1] == 1) {
          for (int64_t i = 0; i < n; ++i) dp[i] = static_cast<D>(sp[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) dp[i * inner[0]] = static_cast<D>(sp[i * inner[1]]);
        }
      });
    });
  });
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = empty(t.sizes(), TensorOptions(t.dtype()));
  copy_into(out, t);
  return out;
}

namespace {

template <typename T, typename F>
Tensor map_unary(const Tensor& x, F f) {
  Tensor xc = contiguous(x);
  Tensor out = empty(x.sizes(), TensorOptions(x.dtype()));
  const T* in = xc.const_data_ptr<T>();
  T* o = out.data_ptr<T>();
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) o[i] = f(in[i]);
  return out;
}

template <typename T>
T sigmoid_value(T v) {
  // Stable for large |v|: never exponentiates a positive number.
  if (v >= 0) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// exp, tanh and sigmoid of float tensors by the vector kernels where there
// are (tensor/vector_rows.h); an undefined tensor where not.
Tensor vector_unary(const Tensor& x, Unary op) {
  if (x.dtype() != kFloat32 || (op != Unary::Exp && op != Unary::Tanh && op != Unary::Sigmoid)) return Tensor();
  const VectorFn fn = op == Unary::Exp ? VectorFn::Exp : op == Unary::Tanh ? VectorFn::Tanh : VectorFn::Sigmoid;
  if (!have_vector_rows()) return Tensor();
  Tensor xc = contiguous(x);
  Tensor out = empty(x.sizes(), TensorOptions(x.dtype()));
  const float* in = xc.const_data_ptr<float>();
  float* o = out.data_ptr<float>();
  // Pieces of 4096 (16 KiB), many per thread; the same results on any count.
  constexpr int64_t kPiece = 4096;
  const int64_t n = out.numel(), pieces = (n + kPiece - 1) / kPiece;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < pieces; ++i) vector_map(fn, std::min(kPiece, n - i * kPiece), in + i * kPiece, o + i * kPiece);
  return out;
}

}  // namespace

Tensor unary(const Tensor& x, Unary op) {
  check_floating(x, "unary op", "input");
  if (Tensor v = vector_unary(x, op); v.defined()) return v;
  return dispatch_floating(x.dtype(), "unary op", [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
      case Unary::Neg: return map_unary<T>(x, [](T v) { return -v; });
      case Unary::Exp: return map_unary<T>(x, [](T v) { return std::exp(v); });
      case Unary::Log: return map_unary<T>(x, [](T v) { return std::log(v); });
      case Unary::Tanh: return map_unary<T>(x, [](T v) { return std::tanh(v); });
      case Unary::Sigmoid: return map_unary<T>(x, [](T v) { return sigmoid_value(v); });
      case Unary::Relu: return map_unary<T>(x, [](T v) { return v > T(0) ? v : T(0); });
      case Unary::Sqrt: return map_unary<T>(x, [](T v) { return std::sqrt(v); });
      case Unary::Abs: return map_unary<T>(x, [](T v) { return std::abs(v); });
      case Unary::Sign:
        return map_unary<T>(x, [](T v) { return T((v > T(0)) - (v < T(0))); });
    }
    throw Error("unary: unknown op");
  });
}

Tensor pow_scalar(const Tensor& x, double exponent) {
  check_floating(x, "pow", "input");
  return dispatch_floating(x.dtype(), "pow", [&](auto tag) {
    using T = decltype(tag);
    const T e = static_cast<T>(exponent);
    if (exponent == 2.0) return map_unary<T>(x, [](T v) { return v * v; });
    return map_unary<T>(x, [e](T v) { return std::pow(v, e); });
  });
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  check_floating(x, "clamp", "input");
  return dispatch_floating(x.dtype(), "clamp", [&](auto tag) {
    using T = decltype(tag);
    const T l = static_cast<T>(lo), h = static_cast<T>(hi);
    return map_unary<T>(x, [l, h](T v) { return v < l ? l : (v > h ? h : v); });
  });
}

namespace {

template <typename T, typename R, typename F>
Tensor map_binary(const Tensor& a, const Tensor& b, const char* opname, Dtype out_dtype, F f) {
  const Shape shape = broadcast_shapes(a.sizes(), b.sizes(), opname);
  Tensor out = empty(shape, TensorOptions(out_dtype));
  R* o = out.data_ptr<R>();
  const T* pa = static_cast<const T*>(a.const_raw_data());
  const T* pb = static_cast<const T*>(b.const_raw_data());
  if (a.sizes() == shape && b.sizes() == shape && a.is_contiguous() && b.is_contiguous()) {
    const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i]);
    return out;
  }
  std::array<Shape, 2> strides{broadcast_strides(a, shape), broadcast_strides(b, shape)};
  int64_t pos = 0;
  nd_loop<2>(shape, strides, [&](const std::array<int64_t, 2>& off, int64_t n,
                                 const std::array<int64_t, 2>& inner) {
    const T* xa = pa + off[0];
    const T* xb = pb + off[1];
    R* y = o + pos;
    for (int64_t i = 0; i < n; ++i) y[i] = f(xa[i * inner[0]], xb[i * inner[1]]);
    pos += n;
  });
  return out;
}

template <typename T>
Tensor binary_typed(const Tensor& a, const Tensor& b, Binary op, const char* opname) {
  const Dtype dt = a.dtype();
  switch (op) {
    case Binary::Add: return map_binary<T, T>(a, b, opname, dt, [](T x, T y) { return x + y; });
    case Binary::Sub: return map_binary<T, T>(a, b, opname, dt, [](T x, T y) { return x - y; });
    case Binary::Mul: return map_binary<T, T>(a, b, opname, dt, [](T x, T y) { return x * y; });
    case Binary::Div: return map_binary<T, T>(a, b, opname, dt, [](T x, T y) { return x / y; });
    case Binary::Max:
      return map_binary<T, T>(a, b, opname, dt, [](T x, T y) { return (x != x || x > y) ? x : y; });
    case Binary::Min:
      return map_binary<T, T>(a, b, opname, dt, [](T x, T y) { return (x != x || x < y) ? x : y; });
    case Binary::Eq: return map_binary<T, bool>(a, b, opname, kBool, [](T x, T y) { return x == y; });
    case Binary::Ne: return map_binary<T, bool>(a, b, opname, kBool, [](T x, T y) { return x != y; });
    case Binary::Lt: return map_binary<T, bool>(a, b, opname, kBool, [](T x, T y) { return x < y; });
    case Binary::Le: return map_binary<T, bool>(a, b, opname, kBool, [](T x, T y) { return x <= y; });
    case Binary::Gt: return map_binary<T, bool>(a, b, opname, kBool, [](T x, T y) { return x > y; });
    case Binary::Ge: return map_binary<T, bool>(a, b, opname, kBool, [](T x, T y) { return x >= y; });
  }
  throw Error("binary: unknown op");
}

}  // namespace

Tensor binary(const Tensor& a, const Tensor& b, Binary op, const char* opname) {
  check_defined(a, opname, "input");
  check_defined(b, opname, "other");
  RNNKIT_CHECK(a.dtype() == b.dtype(), opname, ": expected both operands to have the same dtype, got ",
               dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  return dispatch_all(a.dtype(), opname, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same<T, bool>::value) {
      RNNKIT_CHECK(op == Binary::Eq || op == Binary::Ne, opname,
                   ": arithmetic is not supported on torch.bool tensors");
    }
    return binary_typed<T>(a, b, op, opname);
  });
}

Tensor add_scaled(const Tensor& a, const Tensor& b, double alpha, const char* opname) {
  if (alpha == 1.0) return binary(a, b, Binary::Add, opname);
  check_defined(a, opname, "input");
  check_defined(b, opname, "other");
  RNNKIT_CHECK(a.dtype() == b.dtype(), opname, ": expected both operands to have the same dtype, got ",
               dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  return dispatch_floating(a.dtype(), opname, [&](auto tag) {
    using T = decltype(tag);
    const T s = static_cast<T>(alpha);
    return map_binary<T, T>(a, b, opname, a.dtype(), [s](T x, T y) { return x + s * y; });
  });
}

bool add_scaled_into(Tensor& a, const Tensor& b, double alpha) {
  if (!a.defined() || !b.defined() || a.dtype() != b.dtype() || !is_floating(a.dtype()) ||
      b.dim() > a.dim() || !std::equal(b.sizes().begin(), b.sizes().end(), a.sizes().end() - b.dim()) ||
      !a.is_contiguous() || !b.is_contiguous() || a.storage() == b.storage())
    return false;
  dispatch_floating(a.dtype(), "add_", [&](auto tag) {
    using T = decltype(tag);
    T* pa = a.data_ptr<T>();
    const T* pb = b.const_data_ptr<T>();
    // a as rows of b's length, each row adding b (one row where the shapes are equal).
    const int64_t n = b.numel(), rows = n > 0 ? a.numel() / n : 0;
    const T s = static_cast<T>(alpha);
#pragma omp parallel for schedule(static) if (rows * n > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      T* row = pa + r * n;
      if (alpha == 1.0)
        for (int64_t i = 0; i < n; ++i) row[i] = row[i] + pb[i];
      else
        for (int64_t i = 0; i < n; ++i) row[i] = row[i] + s * pb[i];
    }
  });
  return true;
}

Tensor scalar_op(const Tensor& a, double b, Binary op) {
  return binary(a, full({}, b, TensorOptions(a.dtype())), op, "scalar op");
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined(cond, "where", "condition");
  RNNKIT_CHECK(cond.dtype() == kBool, "where: expected condition to be a torch.bool tensor, got ",
               dtype_name(cond.dtype()));
  RNNKIT_CHECK(a.dtype() == b.dtype(), "where: expected self and other to have the same dtype, got ",
               dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  const Shape shape =
      broadcast_shapes(broadcast_shapes(cond.sizes(), a.sizes(), "where"), b.sizes(), "where");
  Tensor out = empty(shape, TensorOptions(a.dtype()));
  std::array<Shape, 3> strides{broadcast_strides(cond, shape), broadcast_strides(a, shape),
                               broadcast_strides(b, shape)};
  dispatch_all(a.dtype(), "where", [&](auto tag) {
    using T = decltype(tag);
    const bool* pc = cond.const_data_ptr<bool>();
    const T* pa = static_cast<const T*>(a.const_raw_data());
    const T* pb = static_cast<const T*>(b.const_raw_data());
    T* o = out.data_ptr<T>();
    int64_t pos = 0;
    nd_loop<3>(shape, strides, [&](const std::array<int64_t, 3>& off, int64_t n,
                                   const std::array<int64_t, 3>& in) {
      for (int64_t i = 0; i < n; ++i)
        o[pos + i] = pc[off[0] + i * in[0]] ? pa[off[1] + i * in[1]] : pb[off[2] + i * in[2]];
      pos += n;
    });
  });
  return out;
}

}  // namespace native
}  // namespace rnnkit
