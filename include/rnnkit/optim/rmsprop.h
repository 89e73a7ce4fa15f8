#pragma once
// RMSprop, PyTorch 1.13's torch.optim.RMSprop. Per parameter, with g the
// gradient (negated if maximize):
//   g = g + weight_decay * p                       if weight_decay != 0
//   s = alpha * s + (1 - alpha) * g * g            (square_avg)
//   a = alpha * a + (1 - alpha) * g                (grad_avg; centered only)
//   d = sqrt(centered ? s - a * a : s) + eps
//   b = momentum * b + g / d; p = p - lr * b      if momentum > 0
//   p = p - lr * g / d                             otherwise
#include "rnnkit/optim/optimizer.h"

namespace rnnkit::optim {

struct RMSpropOptions : public OptimizerOptions {
  explicit RMSpropOptions(double lr = 1e-2) : lr_(lr) {}
  /// learning rate (default 1e-2)
  RNNKIT_OPTIM_ARG(double, lr);
  /// smoothing constant of the running averages (default 0.99)
  RNNKIT_OPTIM_ARG(double, alpha) = 0.99;
  /// added to the denominator for numerical stability (default 1e-8)
  RNNKIT_OPTIM_ARG(double, eps) = 1e-8;
  /// L2 penalty added to the gradient (default 0)
  RNNKIT_OPTIM_ARG(double, weight_decay) = 0;
  /// momentum factor (default 0)
  RNNKIT_OPTIM_ARG(double, momentum) = 0;
  /// normalise by the estimated variance of the gradient (default false)
  RNNKIT_OPTIM_ARG(bool, centered) = false;
  /// ascend the objective instead of descending (default false)
  RNNKIT_OPTIM_ARG(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<RMSpropOptions>(*this); }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  void validate() const override;
  void visit(FieldVisitor& visitor) override;
};

struct RMSpropParamState : public OptimizerParamState {
  int64_t step = 0;
  Tensor square_avg;                            // like the parameter
  Tensor momentum_buffer;                       // like the parameter; momentum > 0 only
  Tensor grad_avg;                              // like the parameter; centered only
  bool has_momentum = false, centered = false;  // which optional buffers belong to this state
  void visit(StateVisitor& visitor) override;
};

class RMSprop : public Optimizer {
 public:
  RMSprop(std::vector<OptimizerParamGroup> param_groups, RMSpropOptions defaults = RMSpropOptions());
  RMSprop(std::vector<Tensor> params, RMSpropOptions defaults = RMSpropOptions());

 protected:
  void step_group(OptimizerParamGroup& group) override;
  std::unique_ptr<OptimizerParamState> make_state(const Tensor& param, const OptimizerOptions& options) const override;
};

}  // namespace rnnkit::optim
