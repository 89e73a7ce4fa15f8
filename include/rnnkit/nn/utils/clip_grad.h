#pragma once
// Gradient clipping, PyTorch 1.13's torch.nn.utils.clip_grad_norm_ and
// clip_grad_value_. Parameters without a gradient are skipped.
//
//   loss.backward();
//   nn::utils::clip_grad_norm_(model->parameters(), 5.0);
//   opt.step();
#include <vector>

#include "rnnkit/tensor.h"

namespace rnnkit::nn::utils {

// Scales all gradients together so that the norm of order `norm_type` of
// their concatenation is at most max_norm: each gradient is multiplied by
// min(1, max_norm / (total_norm + 1e-6)). norm_type may be any p > 0, 0
// (count of non-zeros) or +/-INFINITY (max/min absolute value). Returns the
// total norm before clipping, computed as PyTorch does (the norm of the
// per-gradient norms, rounded to the gradients' dtype); 0 when no parameter
// has a gradient. With error_if_nonfinite a NaN or infinite total norm throws
// rnnkit::Error (and nothing is scaled); without it the gradients are scaled
// by the non-finite coefficient, as PyTorch does.
double clip_grad_norm_(const std::vector<Tensor>& parameters, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);
double clip_grad_norm_(const Tensor& parameter, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

// Clamps every gradient element into [-clip_value, clip_value].
void clip_grad_value_(const std::vector<Tensor>& parameters, double clip_value);
void clip_grad_value_(const Tensor& parameter, double clip_value);

}  // namespace rnnkit::nn::utils
