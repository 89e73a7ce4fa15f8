#pragma once
// The per-parameter update shared by Adam and AdamW.
#include "rnnkit/optim/adam.h"

namespace rnnkit::optim::detail {

struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, maximize;
  bool decoupled;  // AdamW: weight decay shrinks the parameter instead of adding to the gradient
};

// The validation and the field list of AdamOptions and AdamWOptions, which
// have the same fields (only weight_decay's meaning and default differ).
void validate_adam_options(double lr, const betas_t& betas, double eps, double weight_decay);
void visit_adam_options(FieldVisitor& v, double& lr, betas_t& betas, double& eps, double& weight_decay,
                        bool& amsgrad, bool& maximize);

// The hyperparameters of one step from AdamOptions or AdamWOptions.
template <typename Options>
AdamHyper adam_hyper(const Options& o, bool decoupled) {
  AdamHyper h;
  h.lr = o.lr();
  h.beta1 = std::get<0>(o.betas());
  h.beta2 = std::get<1>(o.betas());
  h.eps = o.eps();
  h.weight_decay = o.weight_decay();
  h.amsgrad = o.amsgrad();
  h.maximize = o.maximize();
  h.decoupled = decoupled;
  return h;
}

// Advances `state` by one step and updates `param` in place with `grad`.
void adam_step(const Tensor& param, const Tensor& grad, AdamParamState& state, const AdamHyper& h,
               const char* optimizer);

}  // namespace rnnkit::optim::detail
