#include "rnnkit/optim/adagrad.h"

#include "util/python_repr.h"
#include "optim/step_util.h"
#include "optim/update_kernels.h"

namespace rnnkit::optim {

using util::py_float;

namespace {
std::unique_ptr<OptimizerParamState> filled_state(const Tensor& param, const AdagradOptions& options) {
  auto s = std::make_unique<AdagradParamState>();
  s->sum = detail::state_buffer(param, options.initial_accumulator_value());
  return s;
}
}  // namespace

void AdagradOptions::validate() const {
  RNNKIT_CHECK(0.0 <= lr_, "Invalid learning rate: ", py_float(lr_));
  RNNKIT_CHECK(0.0 <= lr_decay_, "Invalid lr_decay value: ", py_float(lr_decay_));
  RNNKIT_CHECK(0.0 <= weight_decay_, "Invalid weight_decay value: ", py_float(weight_decay_));
  RNNKIT_CHECK(0.0 <= initial_accumulator_value_,
               "Invalid initial_accumulator_value value: ", py_float(initial_accumulator_value_));
  RNNKIT_CHECK(0.0 <= eps_, "Invalid epsilon value: ", py_float(eps_));
}

void AdagradOptions::visit(FieldVisitor& v) {
  v("lr", lr_);
  v("lr_decay", lr_decay_);
  v("weight_decay", weight_decay_);
  v("initial_accumulator_value", initial_accumulator_value_);
  v("eps", eps_);
  v("maximize", maximize_);
}

void AdagradParamState::visit(StateVisitor& v) {
  v.count("step", step);
  v.tensor("sum", sum, true);
}

Adagrad::Adagrad(std::vector<OptimizerParamGroup> param_groups, AdagradOptions defaults)
    : Optimizer("Adagrad", std::move(param_groups), defaults.clone()) {
  // PyTorch fills the sums of every group with the constructor's
  // initial_accumulator_value, whatever a group's own value says.
  for (auto& group : this->param_groups())
    for (const Tensor& p : group.params())
      state_or_create<AdagradParamState>(p, [&] { return filled_state(p, defaults); });
}

Adagrad::Adagrad(std::vector<Tensor> params, AdagradOptions defaults)
    : Adagrad(single_group(std::move(params)), defaults) {}

std::unique_ptr<OptimizerParamState> Adagrad::make_state(const Tensor&, const OptimizerOptions&) const {
  return std::make_unique<AdagradParamState>();
}

// Groups added later (and parameters left without state by a load) use their own value.
void Adagrad::init_group_state(OptimizerParamGroup& group) {
  const auto& o = static_cast<const AdagradOptions&>(group.options());
  for (const Tensor& p : group.params()) state_or_create<AdagradParamState>(p, [&] { return filled_state(p, o); });
}

void Adagrad::step_group(OptimizerParamGroup& group) {
  const auto& o = static_cast<const AdagradOptions&>(group.options());
  for (const Tensor& p : group.params()) {
    const Tensor grad = checked_grad(p);
    if (!grad.defined()) continue;
    auto& st = state_or_create<AdagradParamState>(p, [&] { return filled_state(p, o); });
    detail::check_buffer(st.sum, p, "Adagrad", "sum");
    st.step += 1;
    const double step = static_cast<double>(st.step);
    const double clr = o.lr() / (1 + (step - 1) * o.lr_decay());

    detail::ContiguousParam param(p);
    detail::by_dtype(p.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::AdagradArgs<T> a{};
      a.param = param.data<T>();
      a.grad = grad.data_ptr<T>();
      a.sum = st.sum.data_ptr<T>();
      a.grad_sign = o.maximize() ? T(-1) : T(1);
      a.weight_decay = static_cast<T>(o.weight_decay());
      a.eps = static_cast<T>(o.eps());
      a.neg_clr = static_cast<T>(-clr);
      a.has_weight_decay = o.weight_decay() != 0;
      kernels::adagrad_update(a, p.numel());
    });
    param.commit();
  }
}

}  // namespace rnnkit::optim
