#pragma once
// Fused parameter updates of the optimizers (and the sum of squares behind
// clip_grad_norm_): one pass over each parameter tensor that reads the
// gradient and the state buffers once and writes the parameter and the
// buffers once, with no temporaries. Large tensors are split across OpenMP
// threads (each element is independent, so the result does not depend on the
// thread count).
//
// The arithmetic reproduces PyTorch 1.13's CPU kernels operation by
// operation, including their rounding: scalars are rounded to the element
// type where PyTorch rounds them (the caller does that when filling the
// *Args), `add(x, alpha=s)` and `addcmul` are fused multiply-adds where
// PyTorch's AVX2 kernels fuse them (fma(x, s, a) and fma(s*t1, t2, a)), and
// `addcdiv` is a + (s*t1)/t2. On a CPU with AVX2+FMA (the kernels PyTorch
// itself runs there) the results are bit-identical to torch.optim's; other
// CPUs use the same sequence without fusion.
//
// All pointers: [n] contiguous elements of the parameter's dtype, distinct
// (no aliasing). `param` and the state buffers are read and written, `grad`
// is read. Optional buffers are null when their flag is off.
#include <cstdint>

namespace rnnkit::optim::kernels {

template <typename T>
struct SgdArgs {
  T* param;
  const T* grad;
  T* momentum_buffer;  // has_momentum only
  T grad_sign;         // -1 for maximize, else 1
  T weight_decay, momentum, one_minus_dampening, neg_lr;
  bool has_weight_decay, has_momentum, first_step, nesterov;  // first_step: buffer = gradient
};

// Adam and AdamW (decoupled: param *= decay_scale first, no L2 term).
template <typename T>
struct AdamArgs {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  T* max_exp_avg_sq;  // amsgrad only
  T grad_sign;
  T weight_decay;  // L2 term (Adam)
  T decay_scale;   // 1 - lr * weight_decay (AdamW)
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T bias_correction2_sqrt, eps, neg_step_size;
  bool has_weight_decay, decoupled, amsgrad;
};

template <typename T>
struct RmspropArgs {
  T* param;
  const T* grad;
  T* square_avg;
  T* grad_avg;         // centered only
  T* momentum_buffer;  // has_momentum only
  T grad_sign, weight_decay, alpha, one_minus_alpha, eps, momentum, neg_lr;
  bool has_weight_decay, centered, has_momentum;
};

template <typename T>
struct AdagradArgs {
  T* param;
  const T* grad;
  T* sum;
  T grad_sign, weight_decay, eps, neg_clr;
  bool has_weight_decay;
};

// Sum of x[i]^2 rounded as PyTorch 1.13's CPU norm(p=2) computes it, so that
// clip_grad_norm_ returns PyTorch's total norm bit for bit. float: 8 lanes of
// fused multiply-add chains, folded left to right, then the remainder;
// double: one fused multiply-add chain. Single-threaded, as PyTorch's
// reduction to one value is. x: [n] contiguous, read.
template <typename T>
T sum_of_squares(const T* x, int64_t n);

template <typename T>
void sgd_update(const SgdArgs<T>& args, int64_t n);
template <typename T>
void adam_update(const AdamArgs<T>& args, int64_t n);
template <typename T>
void rmsprop_update(const RmspropArgs<T>& args, int64_t n);
template <typename T>
void adagrad_update(const AdagradArgs<T>& args, int64_t n);

}  // namespace rnnkit::optim::kernels
