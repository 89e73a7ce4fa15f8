#pragma once
// SGD with momentum, dampening, Nesterov and L2 weight decay: PyTorch 1.13's
// torch.optim.SGD. Per parameter, with g the gradient (negated if maximize):
//   g = g + weight_decay * p                                   if weight_decay != 0
//   b = g (first step), else b = momentum * b + (1 - dampening) * g   if momentum != 0
//   g = nesterov ? g + momentum * b : b                        if momentum != 0
//   p = p - lr * g
#include "rnnkit/optim/optimizer.h"

namespace rnnkit::optim {

struct SGDOptions : public OptimizerOptions {
  /// lr is required, as in PyTorch.
  explicit SGDOptions(double lr) : lr_(lr) {}
  /// learning rate
  RNNKIT_OPTIM_ARG(double, lr);
  /// momentum factor (default 0)
  RNNKIT_OPTIM_ARG(double, momentum) = 0;
  /// dampening for momentum (default 0)
  RNNKIT_OPTIM_ARG(double, dampening) = 0;
  /// L2 penalty added to the gradient (default 0)
  RNNKIT_OPTIM_ARG(double, weight_decay) = 0;
  /// Nesterov momentum; needs momentum > 0 and dampening 0 (default false)
  RNNKIT_OPTIM_ARG(bool, nesterov) = false;
  /// ascend the objective instead of descending (default false)
  RNNKIT_OPTIM_ARG(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<SGDOptions>(*this); }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  void validate() const override;
  void visit(FieldVisitor& visitor) override;
};

struct SGDParamState : public OptimizerParamState {
  Tensor momentum_buffer;  // like the parameter; undefined until a step with momentum != 0
  void visit(StateVisitor& visitor) override;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<OptimizerParamGroup> param_groups, SGDOptions defaults);
  SGD(std::vector<Tensor> params, SGDOptions defaults);

 protected:
  void step_group(OptimizerParamGroup& group) override;
  std::unique_ptr<OptimizerParamState> make_state(const Tensor& param, const OptimizerOptions& options) const override;
};

}  // namespace rnnkit::optim
