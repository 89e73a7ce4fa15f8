#pragma once
// Activation modules and their functional forms: ReLU, Tanh, Sigmoid,
// Softmax, LogSoftmax.
#include <cstdint>
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

struct ReLUOptions {
  ReLUOptions(bool inplace = false) : inplace_(inplace) {}  // NOLINT: implicit, nn::ReLU(true)
  /// write into the input when autograd does not record it (see functional::dropout)
  RNNKIT_NN_ARG(bool, inplace);
};

struct SoftmaxOptions {
  SoftmaxOptions(int64_t dim) : dim_(dim) {}  // NOLINT: implicit, nn::Softmax(1)
  /// the dimension along which the values sum to one
  RNNKIT_NN_ARG(int64_t, dim);
};
using LogSoftmaxOptions = SoftmaxOptions;

namespace functional {
Tensor relu(const Tensor& input, bool inplace = false);
Tensor tanh(const Tensor& input);
Tensor sigmoid(const Tensor& input);
Tensor softmax(const Tensor& input, int64_t dim);
Tensor log_softmax(const Tensor& input, int64_t dim);
}  // namespace functional

class ReLUImpl : public Module {
 public:
  explicit ReLUImpl(const ReLUOptions& options = {}) : options(options) {}
  Tensor forward(const Tensor& input);
  // "" or "inplace=True"
  std::string extra_repr() const override;
  ReLUOptions options;
};
RNNKIT_MODULE(ReLU);

class TanhImpl : public Module {
 public:
  Tensor forward(const Tensor& input);
};
RNNKIT_MODULE(Tanh);

class SigmoidImpl : public Module {
 public:
  Tensor forward(const Tensor& input);
};
RNNKIT_MODULE(Sigmoid);

class SoftmaxImpl : public Module {
 public:
  explicit SoftmaxImpl(const SoftmaxOptions& options) : options(options) {}
  Tensor forward(const Tensor& input);
  // "dim=1"
  std::string extra_repr() const override;
  SoftmaxOptions options;
};
RNNKIT_MODULE(Softmax);

class LogSoftmaxImpl : public Module {
 public:
  explicit LogSoftmaxImpl(const LogSoftmaxOptions& options) : options(options) {}
  Tensor forward(const Tensor& input);
  std::string extra_repr() const override;
  LogSoftmaxOptions options;
};
RNNKIT_MODULE(LogSoftmax);

}  // namespace rnnkit::nn
