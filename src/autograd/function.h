#pragma once
// Internal helper for differentiable ops whose backward is a closure. The
// closure captures what backward needs; release_saved() drops it. Captured
// outputs must be detached (an output holding its own grad_fn is a cycle).
#include <functional>
#include <string>

#include "rnnkit/autograd/node.h"

namespace rnnkit::autograd {

using BackwardFn = std::function<tensor_list(const tensor_list& grad_outputs)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  tensor_list apply(tensor_list&& grads) override {
    // Missing output gradients become zeros so closures need no special case.
    for (size_t i = 0; i < grads.size(); ++i)
      if (!grads[i].defined() && i < output_shapes.size())
        grads[i] = zeros(output_shapes[i], TensorOptions(output_dtypes[i]));
    return fn_(grads);
  }
  std::string name() const override { return name_; }
  void release_saved() override { fn_ = nullptr; }

 private:
  std::string name_;
  BackwardFn fn_;
};

// Records `out = op(inputs)` when needed; returns out.
inline Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor out, BackwardFn fn) {
  if (needs_grad(inputs)) {
    auto node = std::make_shared<FunctionNode>(name, std::move(fn));
    connect(node, inputs, {&out});
  }
  return out;
}

}  // namespace rnnkit::autograd
