// Reductions (sum, max/min with indices) and softmax (no autograd).
#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/iter.h"
#include "tensor/native.h"
#include "tensor/vector_rows.h"

namespace rnnkit::native {

namespace {

// Views x as [outer, reduced] after moving the reduced dims together: returns
// the permuted contiguous copy and the extents. With take_leading, where the
// reduced dims are x's leading ones (not all of them) and x is contiguous, x
// itself as [reduced, outer] instead, without a copy (leading).
struct Folded {
  Tensor data;  // contiguous [outer..., reduced...], or with leading [reduced..., outer...]
  int64_t outer = 1, reduced = 1;
  bool leading = false;
  Shape out_shape;  // with keepdim applied
};

Folded fold_for_reduction(const Tensor& x, const Shape& dims, bool keepdim, const char* op,
                          bool take_leading = false) {
  const int64_t nd = x.dim();
  std::vector<bool> red(static_cast<size_t>(std::max<int64_t>(nd, 1)), false);
  if (dims.empty()) {
    std::fill(red.begin(), red.end(), true);
  } else {
    for (int64_t d : dims) {
      const int64_t w = wrap_dim(d, nd, op);
      RNNKIT_CHECK(!red[w], op, ": dim ", w, " appears multiple times in the list of dims");
      red[w] = true;
    }
  }
  Shape perm, out_shape;
  Folded f;
  for (int64_t d = 0; d < nd; ++d)
    if (!red[d]) {
      perm.push_back(d);
      f.outer *= x.sizes()[d];
    }
  for (int64_t d = 0; d < nd; ++d)
    if (red[d]) {
      perm.push_back(d);
      f.reduced *= x.sizes()[d];
    }
  for (int64_t d = 0; d < nd; ++d) {
    if (!red[d])
      out_shape.push_back(x.sizes()[d]);
    else if (keepdim)
      out_shape.push_back(1);
  }
  f.out_shape = out_shape;
  if (take_leading && nd > 1 && red[0] && !red[nd - 1] && x.is_contiguous() &&
      std::is_partitioned(red.begin(), red.begin() + nd, [](bool r) { return r; })) {
    f.data = x.detach();
    f.leading = true;
    return f;
  }
  Tensor v = x.dim() == 0 ? x : x.detach().permute(perm);
  f.data = contiguous(v);
  return f;
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  check_defined(x, "sum", "input");
  // Leading dims of a contiguous tensor (a bias gradient: the column sums of
  // [rows, n]) are read in place, row by row, each column's sum taken in the
  // same order as over the transposed copy (the same bits), instead of making
  // that copy: [700, 10000] float on two Zen 5 cores 6.5-7.0 -> 1.2-1.3 ms.
  Folded f = fold_for_reduction(x, dims, keepdim, "sum", true);
  const Dtype out_dtype = x.dtype() == kBool ? kInt64 : x.dtype();
  Tensor out = empty(f.out_shape, TensorOptions(out_dtype));
  dispatch_all(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    using Acc = std::conditional_t<std::is_same<T, float>::value, double,
                                   std::conditional_t<std::is_same<T, bool>::value, int64_t, T>>;
    using Out = std::conditional_t<std::is_same<T, bool>::value, int64_t, T>;
    const T* p = f.data.template const_data_ptr<T>();
    Out* o = out.template data_ptr<Out>();
    const int64_t R = f.reduced, n = f.outer;
    if (f.leading) {
      constexpr int64_t kCols = 256;
      const int64_t chunks = (n + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (n * R > 65536)
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t j0 = ch * kCols, w = std::min(kCols, n - j0);
        Acc acc[kCols] = {};
        for (int64_t r = 0; r < R; ++r) {
          const T* row = p + r * n + j0;
          for (int64_t j = 0; j < w; ++j) acc[j] += static_cast<Acc>(row[j]);
        }
        for (int64_t j = 0; j < w; ++j) o[j0 + j] = static_cast<Out>(acc[j]);
      }
      return;
    }
#pragma omp parallel for schedule(static) if (n * R > 65536)
    for (int64_t i = 0; i < n; ++i) {
      Acc acc = 0;
      const T* row = p + i * R;
      for (int64_t r = 0; r < R; ++r) acc += static_cast<Acc>(row[r]);
      o[i] = static_cast<Out>(acc);
    }
  });
  return out;
}

MaxResult max_dim(const Tensor& x, int64_t dim, bool keepdim, bool is_min) {
  const char* op = is_min ? "min" : "max";
  check_defined(x, op, "input");
  RNNKIT_CHECK(x.numel() > 0 || x.dim() == 0, op,
               ": Expected reduction dim to be specified for input.numel() == 0.");
  const int64_t d = wrap_dim(dim, x.dim(), op);
  if (x.dim() > 0)
    RNNKIT_CHECK(x.sizes()[d] > 0, op, ": cannot compute over a zero-size dimension ", d);
  Folded f = fold_for_reduction(x, x.dim() == 0 ? Shape{} : Shape{d}, keepdim, op);
  MaxResult res;
  res.values = empty(f.out_shape, TensorOptions(x.dtype()));
  res.indices = empty(f.out_shape, TensorOptions(kInt64));
  dispatch_all(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* p = f.data.template const_data_ptr<T>();
    T* v = res.values.template data_ptr<T>();
    int64_t* ix = res.indices.data_ptr<int64_t>();
    const int64_t R = f.reduced;
    for (int64_t i = 0; i < f.outer; ++i) {
      const T* row = p + i * R;
      int64_t best = 0;
      for (int64_t r = 1; r < R; ++r) {
        const T a = row[r], b = row[best];
        if (a != a) {  // NaN wins, like PyTorch
          if (b == b) best = r;
          continue;
        }
        if (b != b) continue;
        if (is_min ? a < b : a > b) best = r;
      }
      v[i] = row[best];
      ix[i] = best;
    }
  });
  return res;
}

// Float tensors take the vector kernels' exp (tensor/vector_rows.h; 1 ulp);
// double tensors, and float without vector kernels, the C library's in double.
// A row whose max is -inf (all -inf) shifts by 0 and gives NaN, as does one
// holding +inf or NaN, as in PyTorch.
Tensor softmax(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_floating(x, op, "input");
  const int64_t nd = std::max<int64_t>(x.dim(), 1);
  const int64_t d = wrap_dim(dim, x.dim(), op);
  Tensor xc = contiguous(x.dim() == 0 ? x.reshape({1}) : x);
  Tensor out = empty(xc.sizes(), TensorOptions(x.dtype()));
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= xc.sizes()[i];
  for (int64_t i = d + 1; i < nd; ++i) inner *= xc.sizes()[i];
  const int64_t n = xc.sizes()[d];
  if (x.dtype() == kFloat32 && out.numel() > 0) {
    const float* p = xc.const_data_ptr<float>();
    float* o = out.data_ptr<float>();
    if (softmax_float(p, o, outer, n, inner, log))
      return x.dim() == 0 ? out.reshape({}) : out;
  }
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* p = xc.const_data_ptr<T>();
    T* o = out.data_ptr<T>();
#pragma omp parallel for schedule(static) if (outer * inner * n > 65536)
    for (int64_t a = 0; a < outer; ++a) {
      for (int64_t b = 0; b < inner; ++b) {
        const T* row = p + a * n * inner + b;
        T* orow = o + a * n * inner + b;
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t i = 0; i < n; ++i) m = std::max(m, row[i * inner]);
        if (m == -std::numeric_limits<T>::infinity()) m = 0;
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(row[i * inner] - m));
        if (log) {
          const T ls = static_cast<T>(std::log(s));
          for (int64_t i = 0; i < n; ++i) orow[i * inner] = row[i * inner] - m - ls;
        } else {
          const double inv = 1.0 / s;
          for (int64_t i = 0; i < n; ++i)
            orow[i * inner] = static_cast<T>(std::exp(static_cast<double>(row[i * inner] - m)) * inv);
        }
      }
    }
  });
  return x.dim() == 0 ? out.reshape({}) : out;
}

}  // namespace rnnkit::native
