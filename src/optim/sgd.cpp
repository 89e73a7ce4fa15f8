#include "rnnkit/optim/sgd.h"

#include "util/python_repr.h"
#include "optim/step_util.h"
#include "optim/update_kernels.h"

namespace rnnkit::optim {

using util::py_float;

void SGDOptions::validate() const {
  RNNKIT_CHECK(!(lr_ < 0.0), "Invalid learning rate: ", py_float(lr_));
  RNNKIT_CHECK(!(momentum_ < 0.0), "Invalid momentum value: ", py_float(momentum_));
  RNNKIT_CHECK(!(weight_decay_ < 0.0), "Invalid weight_decay value: ", py_float(weight_decay_));
  RNNKIT_CHECK(!(nesterov_ && (momentum_ <= 0 || dampening_ != 0)),
               "Nesterov momentum requires a momentum and zero dampening");
}

void SGDOptions::visit(FieldVisitor& v) {
  v("lr", lr_);
  v("momentum", momentum_);
  v("dampening", dampening_);
  v("weight_decay", weight_decay_);
  v("nesterov", nesterov_);
  v("maximize", maximize_);
}

void SGDParamState::visit(StateVisitor& v) {
  // Absent until a step ran with momentum (PyTorch's momentum_buffer None).
  v.tensor("momentum_buffer", momentum_buffer, false);
}

SGD::SGD(std::vector<OptimizerParamGroup> param_groups, SGDOptions defaults)
    : Optimizer("SGD", std::move(param_groups), defaults.clone()) {}

SGD::SGD(std::vector<Tensor> params, SGDOptions defaults) : SGD(single_group(std::move(params)), defaults) {}

std::unique_ptr<OptimizerParamState> SGD::make_state(const Tensor&, const OptimizerOptions&) const {
  return std::make_unique<SGDParamState>();
}

void SGD::step_group(OptimizerParamGroup& group) {
  const auto& o = static_cast<const SGDOptions&>(group.options());
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    const bool has_momentum = o.momentum() != 0;
    bool first_step = false;
    Tensor buffer;
    if (has_momentum) {
      auto& st = state_or_create<SGDParamState>(p, [] { return std::make_unique<SGDParamState>(); });
      if (!st.momentum_buffer.defined()) {
        st.momentum_buffer = detail::state_buffer(p);
        first_step = true;
      }
      detail::check_buffer(st.momentum_buffer, p, "SGD", "momentum_buffer");
      buffer = st.momentum_buffer;
    }
    detail::ContiguousParam param(p);
    detail::by_dtype(p.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::SgdArgs<T> a{};
      a.param = param.data<T>();
      a.grad = grad.data_ptr<T>();
      a.momentum_buffer = has_momentum ? buffer.data_ptr<T>() : nullptr;
      a.grad_sign = o.maximize() ? T(-1) : T(1);
      a.weight_decay = static_cast<T>(o.weight_decay());
      a.momentum = static_cast<T>(o.momentum());
      a.one_minus_dampening = static_cast<T>(1 - o.dampening());
      a.neg_lr = static_cast<T>(-o.lr());
      a.has_weight_decay = o.weight_decay() != 0;
      a.has_momentum = has_momentum;
      a.first_step = first_step;
      a.nesterov = o.nesterov();
      kernels::sgd_update(a, p.numel());
    });
    param.commit();
  }
}

}  // namespace rnnkit::optim
