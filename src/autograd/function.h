#pragma once
// Internal helper for differentiable ops whose backward is a closure. The
// closure captures what backward needs; release_saved() drops it. Captured
// outputs must be detached (an output holding its own grad_fn is a cycle).
#include <functional>
#include <string>

#include "rnnkit/autograd/node.h"

namespace rnnkit::autograd {

using BackwardFn = std::function<tensor_list(const tensor_list& grad_outputs)>;
// A closure that may add its gradient for input i into sums[i] (the engine's
// offer, Node::accumulate_into; undefined where there is none) and return an
// undefined gradient there instead.
using SummingBackwardFn = std::function<tensor_list(const tensor_list& grad_outputs, const tensor_list& sums)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn)
      : name_(std::move(name)),
        fn_([fn = std::move(fn)](const tensor_list& grads, const tensor_list&) { return fn(grads); }) {}
  FunctionNode(std::string name, SummingBackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)), sums_(true) {}
  tensor_list apply(tensor_list&& grads) override {
    // Missing output gradients become zeros so closures need no special case.
    for (size_t i = 0; i < grads.size(); ++i)
      if (!grads[i].defined() && i < output_shapes.size())
        grads[i] = zeros(output_shapes[i], TensorOptions(output_dtypes[i]));
    if (sums_ && accumulate_into.size() < next_edges.size()) accumulate_into.resize(next_edges.size());
    return fn_(grads, accumulate_into);
  }
  std::string name() const override { return name_; }
  bool sums_into_inputs() const override { return sums_; }
  void release_saved() override { fn_ = nullptr; }

 private:
  std::string name_;
  SummingBackwardFn fn_;  // a plain BackwardFn ignores the offered sums
  bool sums_ = false;     // whether fn_ may take them
};

// sums[i] when it is defined and has this dtype and shape (a sum the node can
// add its gradient for input i into), else an undefined tensor.
inline Tensor offered_sum(const tensor_list& sums, size_t i, Dtype dtype, const Shape& shape) {
  if (i < sums.size() && sums[i].defined() && sums[i].dtype() == dtype && sums[i].sizes() == shape) return sums[i];
  return Tensor();
}

// Records `out = op(inputs)` when needed; returns out.
template <class Fn>
Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor out, Fn&& fn) {
  if (needs_grad(inputs)) {
    auto node = std::make_shared<FunctionNode>(name, std::forward<Fn>(fn));
    connect(node, inputs, {&out});
  }
  return out;
}

}  // namespace rnnkit::autograd
