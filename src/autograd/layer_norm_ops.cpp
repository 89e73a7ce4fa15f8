// Differentiable layer normalisation (functional::layer_norm) as one node.
//   x [M, D] (rows = leading dims, D = product of normalized_shape), w, b [D]
//   mean, rstd [M] (float64 whatever the dtype): rstd = 1 / sqrt(biased var + eps); xhat = (x - mean) * rstd
//   y = xhat * w + b
// Backward, per row with dyw = dy * w:
//   dx = rstd * (dyw - mean(dyw) - xhat * mean(dyw * xhat));  dw += dy * xhat;  db += dy
#include <cmath>
#include <sstream>
#include <vector>

#include "autograd/function.h"
#include "rnnkit/nn/normalization.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit::nn::functional {

namespace {

using autograd::tensor_list;

template <typename T>
void layer_norm_forward(T* y, double* mean, double* rstd, const T* x, const T* w, const T* b, int64_t M, int64_t D,
                        double eps) {
#pragma omp parallel for schedule(static) if (M * D > 65536)
  for (int64_t i = 0; i < M; ++i) {
    const T* xr = x + i * D;
    double s = 0;
    for (int64_t j = 0; j < D; ++j) s += xr[j];
    const double mu = s / static_cast<double>(D);
    double v = 0;
    for (int64_t j = 0; j < D; ++j) v += (xr[j] - mu) * (xr[j] - mu);
    const double r = 1.0 / std::sqrt(v / static_cast<double>(D) + eps);
    mean[i] = mu;
    rstd[i] = r;
    T* yr = y + i * D;
    for (int64_t j = 0; j < D; ++j) {
      const double xhat = (xr[j] - mu) * r;
      yr[j] = static_cast<T>(xhat * (w ? w[j] : 1.0) + (b ? b[j] : 0.0));
    }
  }
}

// dx, dw, db written (=) when non-null.
template <typename T>
void layer_norm_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const double* mean, const double* rstd,
                         const T* w, int64_t M, int64_t D) {
  if (dx) {
#pragma omp parallel for schedule(static) if (M * D > 65536)
    for (int64_t i = 0; i < M; ++i) {
      const T* xr = x + i * D;
      const T* dyr = dy + i * D;
      const double mu = mean[i], r = rstd[i];
      double sum_dyw = 0, sum_dyw_xhat = 0;
      for (int64_t j = 0; j < D; ++j) {
        const double dyw = dyr[j] * (w ? static_cast<double>(w[j]) : 1.0);
        sum_dyw += dyw;
        sum_dyw_xhat += dyw * (xr[j] - mu) * r;
      }
      const double a = sum_dyw / static_cast<double>(D), c = sum_dyw_xhat / static_cast<double>(D);
      T* dxr = dx + i * D;
      for (int64_t j = 0; j < D; ++j) {
        const double dyw = dyr[j] * (w ? static_cast<double>(w[j]) : 1.0);
        dxr[j] = static_cast<T>(r * (dyw - a - (xr[j] - mu) * r * c));
      }
    }
  }
  if (dw || db) {
    std::vector<double> acc_w(static_cast<size_t>(D), 0.0), acc_b(static_cast<size_t>(D), 0.0);
    for (int64_t i = 0; i < M; ++i) {
      const T* xr = x + i * D;
      const T* dyr = dy + i * D;
      const double mu = mean[i], r = rstd[i];
      for (int64_t j = 0; j < D; ++j) {
        acc_w[j] += dyr[j] * (xr[j] - mu) * r;
        acc_b[j] += dyr[j];
      }
    }
    for (int64_t j = 0; j < D; ++j) {
      if (dw) dw[j] = static_cast<T>(acc_w[j]);
      if (db) db[j] = static_cast<T>(acc_b[j]);
    }
  }
}

}  // namespace

Tensor layer_norm(const Tensor& input, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  check_floating(input, "layer_norm", "input");
  const int64_t nnorm = static_cast<int64_t>(normalized_shape.size());
  RNNKIT_CHECK(nnorm >= 1,
               "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one "
               "element, but got normalized_shape = ",
               shape_str(normalized_shape));
  RNNKIT_CHECK(!weight.defined() || weight.sizes() == normalized_shape,
               "Expected weight to be of same shape as normalized_shape, but got weight of shape ",
               shape_str(weight.defined() ? weight.sizes() : Shape{}),
               " and normalized_shape = ", shape_str(normalized_shape));
  RNNKIT_CHECK(!bias.defined() || bias.sizes() == normalized_shape,
               "Expected bias to be of same shape as normalized_shape, but got bias of shape ",
               shape_str(bias.defined() ? bias.sizes() : Shape{}),
               " and normalized_shape = ", shape_str(normalized_shape));
  const Shape& in_shape = input.sizes();
  const bool trailing_match = input.dim() >= nnorm && Shape(in_shape.end() - nnorm, in_shape.end()) == normalized_shape;
  if (!trailing_match) {
    std::ostringstream ss;
    ss << "Given normalized_shape=" << shape_str(normalized_shape) << ", expected input with shape [*";
    for (int64_t s : normalized_shape) ss << ", " << s;
    ss << "], but got input of size" << shape_str(in_shape);
    throw Error(ss.str());
  }
  for (const Tensor* t : {&weight, &bias})
    RNNKIT_CHECK(!t->defined() || t->dtype() == input.dtype(), "layer_norm: expected scalar type ",
                 dtype_name(input.dtype()), " but found ", dtype_name(t->dtype()));
  int64_t D = 1;
  for (int64_t s : normalized_shape) D *= s;
  const int64_t M = D == 0 ? 0 : input.numel() / D;
  const Dtype dtype = input.dtype();
  Tensor xc = native::contiguous(input.detach());
  Tensor wc = weight.defined() ? native::contiguous(weight.detach()) : Tensor();
  Tensor bc = bias.defined() ? native::contiguous(bias.detach()) : Tensor();
  Tensor y = empty(in_shape, TensorOptions(dtype)), mean = empty({M}, kFloat64), rstd = empty({M}, kFloat64);
  dispatch_floating(dtype, "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
    layer_norm_forward<T>(y.data_ptr<T>(), mean.data_ptr<double>(), rstd.data_ptr<double>(), xc.data_ptr<T>(), ptr(wc),
                          ptr(bc), M, D, eps);
  });
  const bool need_x = input.requires_grad(), need_w = weight.defined() && weight.requires_grad(),
             need_b = bias.defined() && bias.requires_grad();
  return autograd::record(
      "NativeLayerNormBackward0", {input, weight, bias}, y,
      [xc, wc, mean, rstd, M, D, dtype, need_x, need_w, need_b, normalized_shape](const tensor_list& g) -> tensor_list {
        Tensor dy = native::contiguous(g[0]);
        Tensor dx, dw, db;
        if (need_x) dx = empty(xc.sizes(), TensorOptions(dtype));
        if (need_w) dw = empty(normalized_shape, TensorOptions(dtype));
        if (need_b) db = empty(normalized_shape, TensorOptions(dtype));
        dispatch_floating(dtype, "layer_norm backward", [&](auto tag) {
          using T = decltype(tag);
          auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
          layer_norm_backward<T>(ptr(dx), ptr(dw), ptr(db), dy.data_ptr<T>(), xc.data_ptr<T>(), mean.data_ptr<double>(),
                                 rstd.data_ptr<double>(), ptr(wc), M, D);
        });
        return {dx, dw, db};
      });
}

}  // namespace rnnkit::nn::functional
