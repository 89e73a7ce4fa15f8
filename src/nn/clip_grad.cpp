#include "rnnkit/nn/utils/clip_grad.h"

#include <cmath>
#include <limits>

#include "util/python_repr.h"
#include "optim/update_kernels.h"
#include "rnnkit/autograd/node.h"

namespace rnnkit::nn::utils {

namespace {

// torch.norm(x, p) of n contiguous values in T, reproducing PyTorch 1.13's
// CPU kernels (accumulation type T itself, in their order): p = 2 through the
// lane-wise fused multiply-add reduction, the others as one sequential sum.
template <typename T>
T vector_norm(const T* x, int64_t n, double p) {
  if (n == 0) return p < 0 ? std::numeric_limits<T>::infinity() : T(0);
  if (p == 2) return std::sqrt(optim::kernels::sum_of_squares(x, n));
  T acc = std::isinf(p) && p < 0 ? std::numeric_limits<T>::infinity() : T(0);
  if (p == 0) {
    for (int64_t i = 0; i < n; ++i) acc = acc + (x[i] == T(0) ? T(0) : T(1));
  } else if (p == 1) {
    for (int64_t i = 0; i < n; ++i) acc = acc + std::abs(x[i]);
  } else if (std::isinf(p)) {
    for (int64_t i = 0; i < n; ++i) {
      const T a = std::abs(x[i]);
      if (a != a) return a;  // NaN propagates
      if (p > 0 ? a > acc : a < acc) acc = a;
    }
  } else {
    const T q = static_cast<T>(p);
    for (int64_t i = 0; i < n; ++i) acc = acc + std::pow(std::abs(x[i]), q);
    acc = std::pow(acc, T(1) / q);
  }
  return acc;
}

template <typename T>
T tensor_norm(const Tensor& grad, double p) {
  const Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  return vector_norm(g.data_ptr<T>(), g.numel(), p);
}

// PyTorch's total: the norms of the gradients stacked (in T), then their norm
// (their maximum for p = inf).
template <typename T>
T total_norm(const std::vector<Tensor>& grads, double p) {
  std::vector<T> norms;
  for (const Tensor& g : grads)
    norms.push_back(g.dtype() == kFloat64 ? static_cast<T>(tensor_norm<double>(g, p))
                                          : static_cast<T>(tensor_norm<float>(g, p)));
  return vector_norm(norms.data(), static_cast<int64_t>(norms.size()), p);
}

// Multiplies the gradient by coef in place (a strided gradient through a contiguous copy).
template <typename T>
void scale_in_place(const Tensor& grad, T coef) {
  Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  T* data = g.data_ptr<T>();
  const int64_t n = g.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) data[i] = data[i] * coef;
  if (!g.is_same(grad)) {
    NoGradGuard no_grad;
    Tensor(grad).copy_(g);
  }
}

template <typename T>
void clamp_in_place(const Tensor& grad, T low, T high) {
  Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  T* data = g.data_ptr<T>();
  const int64_t n = g.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const T x = data[i];  // NaN stays NaN, as torch.clamp
    data[i] = x < low ? low : (x > high ? high : x);
  }
  if (!g.is_same(grad)) {
    NoGradGuard no_grad;
    Tensor(grad).copy_(g);
  }
}

void check_floating_grad(const Tensor& g, const char* op) {
  RNNKIT_CHECK(g.dtype() == kFloat32 || g.dtype() == kFloat64, op,
               ": gradients must be torch.float32 or torch.float64, got ", dtype_name(g.dtype()));
}

// Rounds to T and computes PyTorch's clip coefficient in T:
// min(1, reciprocal(total_norm + 1e-6) * max_norm).
template <typename T>
T clip_coefficient(double total_norm, double max_norm) {
  const T coef = T(1) / (static_cast<T>(total_norm) + static_cast<T>(1e-6)) * static_cast<T>(max_norm);
  return coef > T(1) ? T(1) : coef;  // torch.clamp(max=1.0) keeps NaN
}

}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& parameters, double max_norm, double norm_type,
                       bool error_if_nonfinite) {
  std::vector<Tensor> grads;
  for (const Tensor& p : parameters)
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  for (const Tensor& g : grads) check_floating_grad(g, "clip_grad_norm_");

  // Computed in the first gradient's dtype, as PyTorch's stacked norms are.
  const Dtype dtype = grads[0].dtype();
  const double total = dtype == kFloat64 ? total_norm<double>(grads, norm_type)
                                         : static_cast<double>(total_norm<float>(grads, norm_type));

  RNNKIT_CHECK(!error_if_nonfinite || std::isfinite(total), "The total norm of order ",
               util::py_float(norm_type),
               " for gradients from `parameters` is non-finite, so it cannot be clipped. To disable this error and "
               "scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`");

  // The coefficient is computed in the total's dtype and converted to each gradient's.
  const double coef = dtype == kFloat64 ? clip_coefficient<double>(total, max_norm)
                                        : static_cast<double>(clip_coefficient<float>(total, max_norm));
  for (const Tensor& g : grads) {
    if (g.dtype() == kFloat64)
      scale_in_place<double>(g, coef);
    else
      scale_in_place<float>(g, static_cast<float>(coef));
  }
  return total;
}

double clip_grad_norm_(const Tensor& parameter, double max_norm, double norm_type, bool error_if_nonfinite) {
  return clip_grad_norm_(std::vector<Tensor>{parameter}, max_norm, norm_type, error_if_nonfinite);
}

void clip_grad_value_(const std::vector<Tensor>& parameters, double clip_value) {
  for (const Tensor& p : parameters) {
    if (!p.defined() || !p.grad().defined()) continue;
    const Tensor g = p.grad();
    check_floating_grad(g, "clip_grad_value_");
    if (g.dtype() == kFloat64)
      clamp_in_place<double>(g, -clip_value, clip_value);
    else
      clamp_in_place<float>(g, static_cast<float>(-clip_value), static_cast<float>(clip_value));
  }
}

void clip_grad_value_(const Tensor& parameter, double clip_value) {
  clip_grad_value_(std::vector<Tensor>{parameter}, clip_value);
}

}  // namespace rnnkit::nn::utils
