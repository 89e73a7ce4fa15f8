#include "rnnkit/nn/activation.h"

namespace rnnkit::nn {

Tensor ReLUImpl::forward(const Tensor& input) { return functional::relu(input, options.inplace()); }
std::string ReLUImpl::extra_repr() const { return options.inplace() ? "inplace=True" : ""; }

Tensor TanhImpl::forward(const Tensor& input) { return functional::tanh(input); }

Tensor SigmoidImpl::forward(const Tensor& input) { return functional::sigmoid(input); }

Tensor SoftmaxImpl::forward(const Tensor& input) { return functional::softmax(input, options.dim()); }
std::string SoftmaxImpl::extra_repr() const { return "dim=" + std::to_string(options.dim()); }

Tensor LogSoftmaxImpl::forward(const Tensor& input) { return functional::log_softmax(input, options.dim()); }
std::string LogSoftmaxImpl::extra_repr() const { return "dim=" + std::to_string(options.dim()); }

}  // namespace rnnkit::nn
