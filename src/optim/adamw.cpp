#include "rnnkit/optim/adamw.h"

#include "optim/adam_step.h"

namespace rnnkit::optim {

void AdamWOptions::validate() const { detail::validate_adam_options(lr_, betas_, eps_, weight_decay_); }

void AdamWOptions::visit(FieldVisitor& v) {
  detail::visit_adam_options(v, lr_, betas_, eps_, weight_decay_, amsgrad_, maximize_);
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
  const detail::AdamHyper h = detail::adam_hyper(o, /*decoupled=*/true);
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    auto& st = state_or_create<AdamParamState>(p, [] { return std::make_unique<AdamParamState>(); });
    detail::adam_step(p, grad, st, h, "AdamW");
  }
}

}  // namespace rnnkit::optim
