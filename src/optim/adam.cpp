#include "rnnkit/optim/adam.h"


#include "optim/adam_step.h"

namespace rnnkit::optim {

void AdamOptions::validate() const { detail::validate_adam_options(lr_, betas_, eps_, weight_decay_); }

void AdamOptions::visit(FieldVisitor& v) {
  detail::visit_adam_options(v, lr_, betas_, eps_, weight_decay_, amsgrad_, maximize_);
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
  const detail::AdamHyper h = detail::adam_hyper(o, /*decoupled=*/false);
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    auto& st = state_or_create<AdamParamState>(p, [] { return std::make_unique<AdamParamState>(); });
    detail::adam_step(p, grad, st, h, "Adam");
  }
}

}  // namespace rnnkit::optim
