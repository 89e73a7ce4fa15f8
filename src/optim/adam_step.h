#pragma once
// The per-parameter update shared by Adam and AdamW.
#include "rnnkit/optim/adam.h"

namespace rnnkit::optim::detail {

struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, maximize;
  bool decoupled;  // AdamW: weight decay shrinks the parameter instead of adding to the gradient
};

// Advances `state` by one step and updates `param` in place with `grad`.
void adam_step(const Tensor& param, const Tensor& grad, AdamParamState& state, const AdamHyper& h,
               const char* optimizer);

}  // namespace rnnkit::optim::detail
