#include "rnnkit/optim/adamw.h"

#include "optim/adam_step.h"
#include "util/python_repr.h"

namespace rnnkit::optim {

using util::py_float;

void AdamWOptions::validate() const {
  RNNKIT_CHECK(0.0 <= lr_, "Invalid learning rate: ", py_float(lr_));
  RNNKIT_CHECK(0.0 <= eps_, "Invalid epsilon value: ", py_float(eps_));
  const double beta1 = std::get<0>(betas_), beta2 = std::get<1>(betas_);
  RNNKIT_CHECK(0.0 <= beta1 && beta1 < 1.0, "Invalid beta parameter at index 0: ", py_float(beta1));
  RNNKIT_CHECK(0.0 <= beta2 && beta2 < 1.0, "Invalid beta parameter at index 1: ", py_float(beta2));
  RNNKIT_CHECK(0.0 <= weight_decay_, "Invalid weight_decay value: ", py_float(weight_decay_));
}

void AdamWOptions::visit(FieldVisitor& v) {
  v("lr", lr_);
  v("betas.0", std::get<0>(betas_));
  v("betas.1", std::get<1>(betas_));
  v("eps", eps_);
  v("weight_decay", weight_decay_);
  v("amsgrad", amsgrad_);
  v("maximize", maximize_);
}

AdamW::AdamW(std::vector<OptimizerParamGroup> param_groups, AdamWOptions defaults)
    : Optimizer("AdamW", std::move(param_groups), defaults.clone()) {}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions defaults) : AdamW(single_group(std::move(params)), defaults) {}

std::unique_ptr<OptimizerParamState> AdamW::make_state(const Tensor&, const OptimizerOptions& options) const {
  auto s = std::make_unique<AdamParamState>();
  s->amsgrad = static_cast<const AdamWOptions&>(options).amsgrad();
  return s;
}

void AdamW::step_group(OptimizerParamGroup& group) {
  const auto& o = static_cast<const AdamWOptions&>(group.options());
  detail::AdamHyper h;
  h.lr = o.lr();
  h.beta1 = std::get<0>(o.betas());
  h.beta2 = std::get<1>(o.betas());
  h.eps = o.eps();
  h.weight_decay = o.weight_decay();
  h.amsgrad = o.amsgrad();
  h.maximize = o.maximize();
  h.decoupled = true;
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    auto& st = state_or_create<AdamParamState>(p, [] { return std::make_unique<AdamParamState>(); });
    detail::adam_step(p, grad, st, h, "AdamW");
  }
}

}  // namespace rnnkit::optim
