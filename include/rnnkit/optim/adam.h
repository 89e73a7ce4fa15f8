#pragma once
// Adam with optional L2 weight decay and AMSGrad: PyTorch 1.13's
// torch.optim.Adam. Per parameter, at step t (counted per parameter), with g
// the gradient (negated if maximize):
//   g = g + weight_decay * p                          if weight_decay != 0
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   v_max = max(v_max, v)                             if amsgrad (then used for v)
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
#include <tuple>

#include "rnnkit/optim/optimizer.h"

namespace rnnkit::optim {

using betas_t = std::tuple<double, double>;

struct AdamOptions : public OptimizerOptions {
  explicit AdamOptions(double lr = 1e-3) : lr_(lr) {}
  /// learning rate (default 1e-3)
  RNNKIT_OPTIM_ARG(double, lr);
  /// coefficients of the running averages of the gradient and its square (default (0.9, 0.999))
  RNNKIT_OPTIM_ARG(betas_t, betas) = betas_t{0.9, 0.999};
  /// added to the denominator for numerical stability (default 1e-8)
  RNNKIT_OPTIM_ARG(double, eps) = 1e-8;
  /// L2 penalty added to the gradient (default 0)
  RNNKIT_OPTIM_ARG(double, weight_decay) = 0;
  /// use the maximum of past squared-gradient averages (AMSGrad; default false)
  RNNKIT_OPTIM_ARG(bool, amsgrad) = false;
  /// ascend the objective instead of descending (default false)
  RNNKIT_OPTIM_ARG(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<AdamOptions>(*this); }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  void validate() const override;
  void visit(FieldVisitor& visitor) override;
};

// State of Adam and AdamW.
struct AdamParamState : public OptimizerParamState {
  int64_t step = 0;
  Tensor exp_avg;         // like the parameter
  Tensor exp_avg_sq;      // like the parameter
  Tensor max_exp_avg_sq;  // like the parameter; amsgrad only
  bool amsgrad = false;   // whether max_exp_avg_sq belongs to this state
  void visit(StateVisitor& visitor) override;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<OptimizerParamGroup> param_groups, AdamOptions defaults = AdamOptions());
  Adam(std::vector<Tensor> params, AdamOptions defaults = AdamOptions());

 protected:
  void step_group(OptimizerParamGroup& group) override;
  std::unique_ptr<OptimizerParamState> make_state(const Tensor& param, const OptimizerOptions& options) const override;
};

}  // namespace rnnkit::optim
