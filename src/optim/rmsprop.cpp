#include "rnnkit/optim/rmsprop.h"

#include "util/python_repr.h"
#include "optim/step_util.h"
#include "optim/update_kernels.h"

namespace rnnkit::optim {

using util::py_float;

void RMSpropOptions::validate() const {
  RNNKIT_CHECK(0.0 <= lr_, "Invalid learning rate: ", py_float(lr_));
  RNNKIT_CHECK(0.0 <= eps_, "Invalid epsilon value: ", py_float(eps_));
  RNNKIT_CHECK(0.0 <= momentum_, "Invalid momentum value: ", py_float(momentum_));
  RNNKIT_CHECK(0.0 <= weight_decay_, "Invalid weight_decay value: ", py_float(weight_decay_));
  RNNKIT_CHECK(0.0 <= alpha_, "Invalid alpha value: ", py_float(alpha_));
}

void RMSpropOptions::visit(FieldVisitor& v) {
  v("lr", lr_);
  v("alpha", alpha_);
  v("eps", eps_);
  v("weight_decay", weight_decay_);
  v("momentum", momentum_);
  v("centered", centered_);
  v("maximize", maximize_);
}

void RMSpropParamState::visit(StateVisitor& v) {
  v.count("step", step);
  v.tensor("square_avg", square_avg, true);
  v.tensor("momentum_buffer", momentum_buffer, has_momentum);
  v.tensor("grad_avg", grad_avg, centered);
}

RMSprop::RMSprop(std::vector<OptimizerParamGroup> param_groups, RMSpropOptions defaults)
    : Optimizer("RMSprop", std::move(param_groups), defaults.clone()) {}

RMSprop::RMSprop(std::vector<Tensor> params, RMSpropOptions defaults)
    : RMSprop(single_group(std::move(params)), defaults) {}

std::unique_ptr<OptimizerParamState> RMSprop::make_state(const Tensor&, const OptimizerOptions& options) const {
  const auto& o = static_cast<const RMSpropOptions&>(options);
  auto s = std::make_unique<RMSpropParamState>();
  s->has_momentum = o.momentum() > 0;
  s->centered = o.centered();
  return s;
}

void RMSprop::step_group(OptimizerParamGroup& group) {
  const auto& o = static_cast<const RMSpropOptions&>(group.options());
  const bool has_momentum = o.momentum() > 0;
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    auto& st = state_or_create<RMSpropParamState>(p, [] { return std::make_unique<RMSpropParamState>(); });
    // Buffers appear when first needed (PyTorch makes them on the first step).
    if (!st.square_avg.defined()) st.square_avg = detail::state_buffer(p);
    if (has_momentum && !st.momentum_buffer.defined()) st.momentum_buffer = detail::state_buffer(p);
    if (o.centered() && !st.grad_avg.defined()) st.grad_avg = detail::state_buffer(p);
    st.has_momentum = st.has_momentum || has_momentum;
    st.centered = st.centered || o.centered();
    detail::check_buffer(st.square_avg, p, "RMSprop", "square_avg");
    if (has_momentum) detail::check_buffer(st.momentum_buffer, p, "RMSprop", "momentum_buffer");
    if (o.centered()) detail::check_buffer(st.grad_avg, p, "RMSprop", "grad_avg");
    st.step += 1;

    detail::ContiguousParam param(p);
    detail::by_dtype(p.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::RmspropArgs<T> a{};
      a.param = param.data<T>();
      a.grad = grad.data_ptr<T>();
      a.square_avg = st.square_avg.data_ptr<T>();
      a.grad_avg = o.centered() ? st.grad_avg.data_ptr<T>() : nullptr;
      a.momentum_buffer = has_momentum ? st.momentum_buffer.data_ptr<T>() : nullptr;
      a.grad_sign = o.maximize() ? T(-1) : T(1);
      a.weight_decay = static_cast<T>(o.weight_decay());
      a.alpha = static_cast<T>(o.alpha());
      a.one_minus_alpha = static_cast<T>(1 - o.alpha());
      a.eps = static_cast<T>(o.eps());
      a.momentum = static_cast<T>(o.momentum());
      a.neg_lr = static_cast<T>(-o.lr());
      a.has_weight_decay = o.weight_decay() != 0;
      a.centered = o.centered();
      a.has_momentum = has_momentum;
      kernels::rmsprop_update(a, p.numel());
    });
    param.commit();
  }
}

}  // namespace rnnkit::optim
