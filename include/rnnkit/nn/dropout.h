#pragma once
// nn::Dropout: zeroes elements with probability p while training and scales
// the rest by 1/(1-p); the identity in eval mode.
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

struct DropoutOptions {
  DropoutOptions(double p = 0.5) : p_(p) {}  // NOLINT: implicit, nn::Dropout(0.2)
  /// probability of an element to be zeroed
  RNNKIT_NN_ARG(double, p);
  /// write into the input when autograd does not record it (see functional::dropout)
  RNNKIT_NN_ARG(bool, inplace) = false;
};

namespace functional {
// With inplace, the input's storage is overwritten and returned when no
// gradient is recorded for it; otherwise (rnnkit has no version counters to
// make an in-place op safe under autograd) a new tensor is returned.
Tensor dropout(const Tensor& input, double p = 0.5, bool training = true, bool inplace = false,
               Generator* generator = nullptr);
}  // namespace functional

class DropoutImpl : public Module {
 public:
  explicit DropoutImpl(const DropoutOptions& options = {});
  // Masks come from `generator` (null: the global generator).
  Tensor forward(const Tensor& input, Generator* generator = nullptr);
  // "p=0.5, inplace=False"
  std::string extra_repr() const override;

  DropoutOptions options;
};
RNNKIT_MODULE(Dropout);

}  // namespace rnnkit::nn
