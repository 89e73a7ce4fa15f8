#pragma once
// AdamW: Adam with decoupled weight decay, PyTorch 1.13's torch.optim.AdamW.
// Each step first shrinks the parameter, p = p * (1 - lr * weight_decay),
// then applies Adam's update (without the L2 term on the gradient).
#include "rnnkit/optim/adam.h"

namespace rnnkit::optim {

struct AdamWOptions : public OptimizerOptions {
  explicit AdamWOptions(double lr = 1e-3) : lr_(lr) {}
  /// learning rate (default 1e-3)
  RNNKIT_OPTIM_ARG(double, lr);
  /// coefficients of the running averages of the gradient and its square (default (0.9, 0.999))
  RNNKIT_OPTIM_ARG(betas_t, betas) = betas_t{0.9, 0.999};
  /// added to the denominator for numerical stability (default 1e-8)
  RNNKIT_OPTIM_ARG(double, eps) = 1e-8;
  /// decoupled weight decay coefficient (default 1e-2)
  RNNKIT_OPTIM_ARG(double, weight_decay) = 1e-2;
  /// use the maximum of past squared-gradient averages (AMSGrad; default false)
  RNNKIT_OPTIM_ARG(bool, amsgrad) = false;
  /// ascend the objective instead of descending (default false)
  RNNKIT_OPTIM_ARG(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<AdamWOptions>(*this); }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  void validate() const override;
  void visit(FieldVisitor& visitor) override;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<OptimizerParamGroup> param_groups, AdamWOptions defaults = AdamWOptions());
  AdamW(std::vector<Tensor> params, AdamWOptions defaults = AdamWOptions());

 protected:
  void step_group(OptimizerParamGroup& group) override;
  std::unique_ptr<OptimizerParamState> make_state(const Tensor& param, const OptimizerOptions& options) const override;
};

}  // namespace rnnkit::optim
