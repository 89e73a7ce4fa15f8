#include "rnnkit/optim/adam.h"

#include <cmath>

#include "optim/adam_step.h"
#include "util/python_repr.h"

namespace rnnkit::optim {

using util::py_float;

void AdamOptions::validate() const {
  RNNKIT_CHECK(0.0 <= lr_, "Invalid learning rate: ", py_float(lr_));
  RNNKIT_CHECK(0.0 <= eps_, "Invalid epsilon value: ", py_float(eps_));
  const double beta1 = std::get<0>(betas_), beta2 = std::get<1>(betas_);
  RNNKIT_CHECK(0.0 <= beta1 && beta1 < 1.0, "Invalid beta parameter at index 0: ", py_float(beta1));
  RNNKIT_CHECK(0.0 <= beta2 && beta2 < 1.0, "Invalid beta parameter at index 1: ", py_float(beta2));
  RNNKIT_CHECK(0.0 <= weight_decay_, "Invalid weight_decay value: ", py_float(weight_decay_));
}

void AdamOptions::visit(FieldVisitor& v) {
  v("lr", lr_);
  v("betas.0", std::get<0>(betas_));
  v("betas.1", std::get<1>(betas_));
  v("eps", eps_);
  v("weight_decay", weight_decay_);
  v("amsgrad", amsgrad_);
  v("maximize", maximize_);
}

void AdamParamState::visit(StateVisitor& v) {
  v.count("step", step);
  v.tensor("exp_avg", exp_avg, true);
  v.tensor("exp_avg_sq", exp_avg_sq, true);
  v.tensor("max_exp_avg_sq", max_exp_avg_sq, amsgrad);
}

Adam::Adam(std::vector<OptimizerParamGroup> param_groups, AdamOptions defaults)
    : Optimizer("Adam", std::move(param_groups), defaults.clone()) {}

Adam::Adam(std::vector<Tensor> params, AdamOptions defaults) : Adam(single_group(std::move(params)), defaults) {}

std::unique_ptr<OptimizerParamState> Adam::make_state(const Tensor&, const OptimizerOptions& options) const {
  auto s = std::make_unique<AdamParamState>();
  s->amsgrad = static_cast<const AdamOptions&>(options).amsgrad();
  return s;
}

void Adam::step_group(OptimizerParamGroup& group) {
  const auto& o = static_cast<const AdamOptions&>(group.options());
  detail::AdamHyper h;
  h.lr = o.lr();
  h.beta1 = std::get<0>(o.betas());
  h.beta2 = std::get<1>(o.betas());
  h.eps = o.eps();
  h.weight_decay = o.weight_decay();
  h.amsgrad = o.amsgrad();
  h.maximize = o.maximize();
  h.decoupled = false;
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    auto& st = state_or_create<AdamParamState>(p, [] { return std::make_unique<AdamParamState>(); });
    detail::adam_step(p, grad, st, h, "Adam");
  }
}

}  // namespace rnnkit::optim
