#pragma once
// Define-by-run autograd. Every differentiable op that sees an input requiring
// grad (with grad mode on) creates a Node holding what its backward needs and
// one Edge per input pointing at that input's producer. Tensor::backward walks
// the graph in reverse creation order, sums gradients per node input, and
// frees each node's saved tensors after it ran unless retain_graph is set.
//
// A node may have several outputs (a whole recurrent layer yields output, h_n
// and c_n from ONE node); outputs that received no gradient arrive as
// undefined tensors and the node treats them as zeros.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rnnkit/tensor.h"

namespace rnnkit::autograd {

using tensor_list = std::vector<Tensor>;

class Node;

struct Edge {
  std::shared_ptr<Node> fn;  // null: that input needs no gradient
  uint32_t input_nr = 0;     // which output slot of fn the gradient belongs to
  bool valid() const { return fn != nullptr; }
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  Node();
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Gradients w.r.t. this node's outputs -> gradients w.r.t. its inputs, one
  // per entry of next_edges (undefined where an input needs none).
  virtual tensor_list apply(tensor_list&& grad_outputs) = 0;
  virtual std::string name() const = 0;
  // Drops saved tensors once backward has run (unless retain_graph).
  virtual void release_saved() {}

  std::vector<Edge> next_edges;
  uint32_t num_outputs = 1;
  uint64_t sequence_nr;  // creation order; later nodes run first
  // Shapes/dtypes of the outputs, so a missing gradient can be materialised as zeros.
  std::vector<Shape> output_shapes;
  std::vector<Dtype> output_dtypes;
  // Set once backward ran without retain_graph; a second backward then throws.
  bool released = false;
  // Set by the engine just before apply() when the saved tensors are freed right
  // after it (retain_graph = false): apply() may then consume them (overwrite
  // saved buffers in place) since nothing will read them again.
  bool last_apply = false;

  // A node that says so may add its gradient for input i straight into the sum
  // that input has gathered so far from other nodes, instead of returning a
  // fresh tensor to be added to it: the engine then sets accumulate_into, one
  // entry per next_edges entry, just before apply(), and clears it after. An
  // entry is defined only where that sum exists, no other handle or graph sees
  // it, it is contiguous, and no other edge of this node leads to the same
  // slot. A node that adds into entry i returns an undefined gradient there.
  // (A weight used at every step of a loop, as a decoder cell's, then gathers
  // its gradient without a fresh buffer and a separate sum per step.)
  virtual bool sums_into_inputs() const { return false; }
  std::vector<Tensor> accumulate_into;
};

// Sink for leaf tensors: adds the incoming gradient into variable.grad().
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> variable);
  tensor_list apply(tensor_list&& grads) override;
  std::string name() const override { return "AccumulateGrad"; }
  std::shared_ptr<TensorImpl> variable;
};

// Is gradient recording on (thread-local)?
bool grad_mode_enabled();
void set_grad_mode(bool enabled);

// The edge a gradient for `t` must flow along (invalid if t needs no grad).
Edge gradient_edge(const Tensor& t);
// True when grad mode is on and any defined input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);
// Wires node's next_edges to the inputs and makes `outputs` its results.
void connect(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
             const std::vector<Tensor*>& outputs);

// Runs backward from roots with the given root gradients.
void run_backward(const tensor_list& roots, const tensor_list& grad_roots, bool retain_graph);

// Sums grad over broadcast dimensions so it has `shape` (inverse of expand).
Tensor sum_to(const Tensor& grad, const Shape& shape);

}  // namespace rnnkit::autograd

namespace rnnkit {

// RAII: disables gradient recording in its scope (torch.no_grad()).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(autograd::grad_mode_enabled()) { autograd::set_grad_mode(false); }
  ~NoGradGuard() { autograd::set_grad_mode(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace rnnkit
