#pragma once
// Adagrad, PyTorch 1.13's torch.optim.Adagrad. The state (sum filled with
// initial_accumulator_value, step 0) exists for every parameter from the
// moment it joins the optimizer, as in PyTorch; like PyTorch, the constructor
// fills every group's sums with the defaults' initial_accumulator_value (a
// group's own value applies to groups added later). Per parameter, at step t,
// with g the gradient (negated if maximize):
//   g = g + weight_decay * p                       if weight_decay != 0
//   clr = lr / (1 + (t - 1) * lr_decay)
//   sum = sum + g * g
//   p = p - clr * g / (sqrt(sum) + eps)
#include "rnnkit/optim/optimizer.h"

namespace rnnkit::optim {

struct AdagradOptions : public OptimizerOptions {
  explicit AdagradOptions(double lr = 1e-2) : lr_(lr) {}
  /// learning rate (default 1e-2)
  RNNKIT_OPTIM_ARG(double, lr);
  /// learning-rate decay per step (default 0)
  RNNKIT_OPTIM_ARG(double, lr_decay) = 0;
  /// L2 penalty added to the gradient (default 0)
  RNNKIT_OPTIM_ARG(double, weight_decay) = 0;
  /// starting value of the sum of squared gradients (default 0)
  RNNKIT_OPTIM_ARG(double, initial_accumulator_value) = 0;
  /// added to the denominator for numerical stability (default 1e-10)
  RNNKIT_OPTIM_ARG(double, eps) = 1e-10;
  /// ascend the objective instead of descending (default false)
  RNNKIT_OPTIM_ARG(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<AdagradOptions>(*this); }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  void validate() const override;
  void visit(FieldVisitor& visitor) override;
};

struct AdagradParamState : public OptimizerParamState {
  int64_t step = 0;
  Tensor sum;  // like the parameter
  void visit(StateVisitor& visitor) override;
};

class Adagrad : public Optimizer {
 public:
  Adagrad(std::vector<OptimizerParamGroup> param_groups, AdagradOptions defaults = AdagradOptions());
  Adagrad(std::vector<Tensor> params, AdagradOptions defaults = AdagradOptions());

 protected:
  void step_group(OptimizerParamGroup& group) override;
  std::unique_ptr<OptimizerParamState> make_state(const Tensor& param, const OptimizerOptions& options) const override;
  void init_group_state(OptimizerParamGroup& group) override;
};

}  // namespace rnnkit::optim
