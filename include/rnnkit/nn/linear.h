#pragma once
// nn::Linear: y = x W^T + b, as torch.nn.Linear.
#include <cstdint>
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  /// size of each input sample
  RNNKIT_NN_ARG(int64_t, in_features);
  /// size of each output sample
  RNNKIT_NN_ARG(int64_t, out_features);
  /// whether to learn an additive bias
  RNNKIT_NN_ARG(bool, bias) = true;
};

namespace functional {
// input [*, in], weight [out, in], bias [out] or undefined -> [*, out].
Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor());
}  // namespace functional

class LinearImpl : public Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features) : LinearImpl(LinearOptions(in_features, out_features)) {}
  explicit LinearImpl(const LinearOptions& options, Generator* generator = nullptr);

  // weight ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); bias ~ the same bound.
  void reset_parameters(Generator* generator = nullptr);
  // input [*, in_features] -> [*, out_features]
  Tensor forward(const Tensor& input);
  // "in_features=3, out_features=4, bias=True"
  std::string extra_repr() const override;

  LinearOptions options;
  Tensor weight;  // [out_features, in_features]
  Tensor bias;    // [out_features], undefined when options.bias() is false
};
RNNKIT_MODULE(Linear);

}  // namespace rnnkit::nn
