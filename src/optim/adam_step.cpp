#include "optim/adam_step.h"

#include <cmath>

#include "optim/step_util.h"
#include "optim/update_kernels.h"
#include "util/python_repr.h"

namespace rnnkit::optim::detail {

using util::py_float;

void validate_adam_options(double lr, const betas_t& betas, double eps, double weight_decay) {
  RNNKIT_CHECK(0.0 <= lr, "Invalid learning rate: ", py_float(lr));
  RNNKIT_CHECK(0.0 <= eps, "Invalid epsilon value: ", py_float(eps));
  const double beta1 = std::get<0>(betas), beta2 = std::get<1>(betas);
  RNNKIT_CHECK(0.0 <= beta1 && beta1 < 1.0, "Invalid beta parameter at index 0: ", py_float(beta1));
  RNNKIT_CHECK(0.0 <= beta2 && beta2 < 1.0, "Invalid beta parameter at index 1: ", py_float(beta2));
  RNNKIT_CHECK(0.0 <= weight_decay, "Invalid weight_decay value: ", py_float(weight_decay));
}

void visit_adam_options(FieldVisitor& v, double& lr, betas_t& betas, double& eps, double& weight_decay,
                        bool& amsgrad, bool& maximize) {
  v("lr", lr);
  v("betas.0", std::get<0>(betas));
  v("betas.1", std::get<1>(betas));
  v("eps", eps);
  v("weight_decay", weight_decay);
  v("amsgrad", amsgrad);
  v("maximize", maximize);
}

void adam_step(const Tensor& p, const Tensor& grad, AdamParamState& st, const AdamHyper& h, const char* optimizer) {
  if (!st.exp_avg.defined()) {
    st.exp_avg = state_buffer(p);
    st.exp_avg_sq = state_buffer(p);
  }
  if (h.amsgrad && !st.max_exp_avg_sq.defined()) st.max_exp_avg_sq = state_buffer(p);
  st.amsgrad = st.amsgrad || h.amsgrad;
  check_buffer(st.exp_avg, p, optimizer, "exp_avg");
  check_buffer(st.exp_avg_sq, p, optimizer, "exp_avg_sq");
  if (h.amsgrad) check_buffer(st.max_exp_avg_sq, p, optimizer, "max_exp_avg_sq");

  st.step += 1;
  // Python floats, as torch.optim computes them.
  const double step = static_cast<double>(st.step);
  const double bias_correction1 = 1 - std::pow(h.beta1, step);
  const double bias_correction2 = 1 - std::pow(h.beta2, step);
  const double step_size = h.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);

  ContiguousParam param(p);
  by_dtype(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::AdamArgs<T> a{};
    a.param = param.data<T>();
    a.grad = grad.data_ptr<T>();
    a.exp_avg = st.exp_avg.data_ptr<T>();
    a.exp_avg_sq = st.exp_avg_sq.data_ptr<T>();
    a.max_exp_avg_sq = h.amsgrad ? st.max_exp_avg_sq.data_ptr<T>() : nullptr;
    a.grad_sign = h.maximize ? T(-1) : T(1);
    a.weight_decay = static_cast<T>(h.weight_decay);
    a.decay_scale = static_cast<T>(1 - h.lr * h.weight_decay);
    a.beta1 = static_cast<T>(h.beta1);
    a.one_minus_beta1 = static_cast<T>(1 - h.beta1);
    a.beta2 = static_cast<T>(h.beta2);
    a.one_minus_beta2 = static_cast<T>(1 - h.beta2);
    a.bias_correction2_sqrt = static_cast<T>(bias_correction2_sqrt);
    a.eps = static_cast<T>(h.eps);
    a.neg_step_size = static_cast<T>(-step_size);
    a.has_weight_decay = !h.decoupled && h.weight_decay != 0;
    a.decoupled = h.decoupled;
    a.amsgrad = h.amsgrad;
    kernels::adam_update(a, p.numel());
  });
  param.commit();
}

}  // namespace rnnkit::optim::detail
