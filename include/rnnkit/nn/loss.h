#pragma once
// Loss functions with PyTorch's semantics, as modules and functional forms:
// CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss, BCELoss, MSELoss, L1Loss,
// SmoothL1Loss. Class weights and pos_weight are registered as buffers
// ("weight", "pos_weight"), so they appear in state_dict as in PyTorch.
#include <cstdint>
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

// How per-element losses become the result: kept ("none"), averaged ("mean",
// the default) or summed ("sum").
enum class Reduction { None, Mean, Sum };
constexpr Reduction kNone = Reduction::None;
constexpr Reduction kMean = Reduction::Mean;
constexpr Reduction kSum = Reduction::Sum;
// "none" | "mean" | "sum"; throws "<s> is not a valid value for reduction" otherwise.
Reduction reduction_from_string(const std::string& reduction);

// Adds `.reduction("sum")` next to the generated `.reduction(kSum)` setter.
#define RNNKIT_NN_REDUCTION_ARG                                                              \
  RNNKIT_NN_ARG(Reduction, reduction) = Reduction::Mean;                                     \
                                                                                             \
 public:                                                                                     \
  auto reduction(const std::string& name)->decltype(*this) {                                 \
    reduction_ = reduction_from_string(name);                                                \
    return *this;                                                                            \
  }                                                                                          \
  auto reduction(const char* name)->decltype(*this) { return reduction(std::string(name)); } \
                                                                                             \
 private:                                                                                    \
  static_assert(true, "")

struct CrossEntropyLossOptions {
  /// a manual rescaling weight per class, shape [C]
  RNNKIT_NN_ARG(Tensor, weight) = Tensor();
  /// targets with this class index contribute neither loss nor gradient
  RNNKIT_NN_ARG(int64_t, ignore_index) = -100;
  RNNKIT_NN_REDUCTION_ARG;
  /// in [0, 1]: the target becomes (1 - s) * one_hot + s / C
  RNNKIT_NN_ARG(double, label_smoothing) = 0.0;
};

struct NLLLossOptions {
  /// a manual rescaling weight per class, shape [C]
  RNNKIT_NN_ARG(Tensor, weight) = Tensor();
  /// targets with this class index contribute neither loss nor gradient
  RNNKIT_NN_ARG(int64_t, ignore_index) = -100;
  RNNKIT_NN_REDUCTION_ARG;
};

struct BCEWithLogitsLossOptions {
  /// a manual rescaling weight, broadcast to the input's shape
  RNNKIT_NN_ARG(Tensor, weight) = Tensor();
  RNNKIT_NN_REDUCTION_ARG;
  /// weight of positive examples, broadcast along the last (class) dimension
  RNNKIT_NN_ARG(Tensor, pos_weight) = Tensor();
};

struct BCELossOptions {
  /// a manual rescaling weight, broadcast to the input's shape
  RNNKIT_NN_ARG(Tensor, weight) = Tensor();
  RNNKIT_NN_REDUCTION_ARG;
};

struct MSELossOptions {
  MSELossOptions(Reduction reduction = Reduction::Mean) : reduction_(reduction) {}  // NOLINT: implicit
  RNNKIT_NN_REDUCTION_ARG;
};

struct L1LossOptions {
  L1LossOptions(Reduction reduction = Reduction::Mean) : reduction_(reduction) {}  // NOLINT: implicit
  RNNKIT_NN_REDUCTION_ARG;
};

struct SmoothL1LossOptions {
  RNNKIT_NN_REDUCTION_ARG;
  /// where the loss changes from quadratic to linear; 0 gives L1
  RNNKIT_NN_ARG(double, beta) = 1.0;
};

namespace functional {

using CrossEntropyFuncOptions = CrossEntropyLossOptions;
using NLLLossFuncOptions = NLLLossOptions;
using BinaryCrossEntropyWithLogitsFuncOptions = BCEWithLogitsLossOptions;
using BinaryCrossEntropyFuncOptions = BCELossOptions;
using MSELossFuncOptions = MSELossOptions;
using L1LossFuncOptions = L1LossOptions;
using SmoothL1LossFuncOptions = SmoothL1LossOptions;

// input: unnormalised scores [N, C], [N, C, d1, ...] or [C]. target: int64
// class indices [N] / [N, d1, ...] / [] — or class probabilities of the
// input's shape (floating). log_softmax and the negative log-likelihood are
// one fused node over the class dimension (no [N, C] log-probability tensor).
Tensor cross_entropy(const Tensor& input, const Tensor& target, const CrossEntropyFuncOptions& options = {});
// input: log-probabilities, shapes as cross_entropy; target: int64 class indices.
// "mean" divides by the summed weight of the non-ignored targets.
Tensor nll_loss(const Tensor& input, const Tensor& target, const NLLLossFuncOptions& options = {});
// Sigmoid + binary cross entropy in the numerically stable form; input and target of one shape.
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                        const BinaryCrossEntropyWithLogitsFuncOptions& options = {});
// input: probabilities in [0, 1]; each log is clamped to >= -100.
Tensor binary_cross_entropy(const Tensor& input, const Tensor& target,
                            const BinaryCrossEntropyFuncOptions& options = {});
// (input - target)^2; input and target broadcast.
Tensor mse_loss(const Tensor& input, const Tensor& target, const MSELossFuncOptions& options = {});
// |input - target|; input and target broadcast.
Tensor l1_loss(const Tensor& input, const Tensor& target, const L1LossFuncOptions& options = {});
// 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta; d = input - target.
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, const SmoothL1LossFuncOptions& options = {});

}  // namespace functional

class CrossEntropyLossImpl : public Module {
 public:
  explicit CrossEntropyLossImpl(const CrossEntropyLossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target);
  CrossEntropyLossOptions options;
  Tensor weight;  // buffer "weight" ([C] or undefined)
};
RNNKIT_MODULE(CrossEntropyLoss);

class NLLLossImpl : public Module {
 public:
  explicit NLLLossImpl(const NLLLossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target);
  NLLLossOptions options;
  Tensor weight;  // buffer "weight"
};
RNNKIT_MODULE(NLLLoss);

class BCEWithLogitsLossImpl : public Module {
 public:
  explicit BCEWithLogitsLossImpl(const BCEWithLogitsLossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target);
  BCEWithLogitsLossOptions options;
  Tensor weight;      // buffer "weight"
  Tensor pos_weight;  // buffer "pos_weight"
};
RNNKIT_MODULE(BCEWithLogitsLoss);

class BCELossImpl : public Module {
 public:
  explicit BCELossImpl(const BCELossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target);
  BCELossOptions options;
  Tensor weight;  // buffer "weight"
};
RNNKIT_MODULE(BCELoss);

class MSELossImpl : public Module {
 public:
  explicit MSELossImpl(const MSELossOptions& options = {}) : options(options) {}
  Tensor forward(const Tensor& input, const Tensor& target);
  MSELossOptions options;
};
RNNKIT_MODULE(MSELoss);

class L1LossImpl : public Module {
 public:
  explicit L1LossImpl(const L1LossOptions& options = {}) : options(options) {}
  Tensor forward(const Tensor& input, const Tensor& target);
  L1LossOptions options;
};
RNNKIT_MODULE(L1Loss);

class SmoothL1LossImpl : public Module {
 public:
  explicit SmoothL1LossImpl(const SmoothL1LossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target);
  SmoothL1LossOptions options;
};
RNNKIT_MODULE(SmoothL1Loss);

}  // namespace rnnkit::nn
