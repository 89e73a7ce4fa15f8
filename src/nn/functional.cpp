// Functional forms that forward to the differentiable ops of rnnkit/ops.h.
#include "rnnkit/nn/functional.h"

#include "rnnkit/autograd/node.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit::nn::functional {

namespace {

// The in-place variants write into `input` when autograd does not record it.
// Under autograd a leaf fails as in PyTorch; other inputs get a new tensor
// (an in-place op under autograd needs version counters rnnkit lacks).
Tensor maybe_in_place(const Tensor& input, const Tensor& result, bool inplace) {
  if (!inplace || result.is_same(input)) return result;
  if (autograd::needs_grad({&input})) {
    RNNKIT_CHECK(!input.is_leaf(), "a leaf Variable that requires grad is being used in an in-place operation.");
    return result;
  }
  native::copy_into(input, result);
  return input;
}

}  // namespace

Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias) {
  return rnnkit::linear(input, weight, bias);
}

Tensor dropout(const Tensor& input, double p, bool training, bool inplace, Generator* generator) {
  RNNKIT_CHECK(p >= 0.0 && p <= 1.0, "dropout probability has to be between 0 and 1, but got ", p);
  return maybe_in_place(input, rnnkit::dropout(input, p, training, generator), inplace);
}

Tensor relu(const Tensor& input, bool inplace) { return maybe_in_place(input, rnnkit::relu(input), inplace); }
Tensor tanh(const Tensor& input) { return rnnkit::tanh(input); }
Tensor sigmoid(const Tensor& input) { return rnnkit::sigmoid(input); }
Tensor softmax(const Tensor& input, int64_t dim) { return rnnkit::softmax(input, dim); }
Tensor log_softmax(const Tensor& input, int64_t dim) { return rnnkit::log_softmax(input, dim); }

}  // namespace rnnkit::nn::functional
