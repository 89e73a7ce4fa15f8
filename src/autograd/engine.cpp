// The backward engine: dependency counting over the graph reachable from the
// roots, then nodes run latest-created first (a valid topological order,
// since a node's inputs are always created before it).
#include <atomic>
#include <queue>
#include <unordered_map>

#include "rnnkit/autograd/node.h"
#include "tensor/native.h"
#include "tensor/tensor_impl.h"

namespace rnnkit::autograd {

namespace {
std::atomic<uint64_t> next_sequence_nr{0};
thread_local bool grad_mode = true;
}  // namespace

Node::Node() : sequence_nr(next_sequence_nr++) {}

bool grad_mode_enabled() { return grad_mode; }
void set_grad_mode(bool enabled) { grad_mode = enabled; }

AccumulateGrad::AccumulateGrad(std::shared_ptr<TensorImpl> v) : variable(std::move(v)) {
  output_shapes = {variable->sizes};
  output_dtypes = {variable->dtype};
}

// Whether no other handle or view can see g's memory (this is the only handle
// on its TensorImpl and that the only one on its storage) and it has no
// history: it may then be written in place.
static bool sole_plain_handle(const Tensor& g) {
  const std::shared_ptr<Storage>& storage = g.storage();
  return g.impl().use_count() == 1 && storage && storage.use_count() == 1 && !g.requires_grad() && !g.grad_fn();
}
// Whether g may become a leaf's .grad as it is: a sole plain handle that fills
// its storage exactly, with the leaf's shape and row-major strides (as a copy
// would). PyTorch's AccumulateGrad steals such a gradient likewise instead of
// copying it.
static bool can_take_as_grad(const Tensor& g, const TensorImpl& leaf) {
  return sole_plain_handle(g) && g.storage_offset() == 0 && g.sizes() == leaf.sizes &&
         g.strides() == contiguous_strides(leaf.sizes) && g.nbytes() == g.storage()->nbytes();
}

tensor_list AccumulateGrad::apply(tensor_list&& grads) {
  Tensor g = std::move(grads[0]);
  if (!g.defined()) return {};
  Tensor& acc = variable->grad;
  if (g.dtype() != variable->dtype) g = g.to(variable->dtype);
  if (!acc.defined()) {
    if (can_take_as_grad(g, *variable)) {
      acc = std::move(g);
      return {};
    }
    // Own a fresh contiguous buffer: incoming gradients may alias saved data
    // or another gradient.
    Tensor fresh = empty(variable->sizes, TensorOptions(variable->dtype));
    native::copy_into(fresh, g);
    acc = fresh;
  } else {
    NoGradGuard guard;
    acc.add_(g);
  }
  return {};
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined()) return {};
  const auto& impl = t.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  if (!impl->requires_grad) return {};
  auto acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(impl);
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_mode) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void connect(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
             const std::vector<Tensor*>& outputs) {
  node->next_edges.clear();
  node->next_edges.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  node->num_outputs = static_cast<uint32_t>(outputs.size());
  node->output_shapes.clear();
  node->output_dtypes.clear();
  for (uint32_t i = 0; i < outputs.size(); ++i) {
    Tensor* out = outputs[i];
    if (!out || !out->defined()) {
      node->output_shapes.push_back({});
      node->output_dtypes.push_back(kFloat32);
      continue;
    }
    node->output_shapes.push_back(out->sizes());
    node->output_dtypes.push_back(out->dtype());
    out->impl()->grad_fn = node;
    out->impl()->output_nr = i;
    out->impl()->requires_grad = false;
  }
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.sizes() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  Shape dims;
  for (int64_t i = 0; i < grad.dim(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && grad.sizes()[i] != 1)) dims.push_back(i);
  }
  Tensor r = dims.empty() ? grad : native::sum(grad, dims, true);
  if (lead > 0 || r.sizes() != shape) r = r.reshape(shape);
  return r;
}

void run_backward(const tensor_list& roots, const tensor_list& grad_roots, bool retain_graph) {
  NoGradGuard no_grad;  // backward functions compute plain tensors
  // 1. Count, for every node, how many edges lead into it.
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::shared_ptr<Node>> owner;
  std::vector<Node*> stack;
  for (const Tensor& r : roots) {
    Edge e = gradient_edge(r);
    if (!e.valid()) continue;
    if (!owner.count(e.fn.get())) {
      owner[e.fn.get()] = e.fn;
      stack.push_back(e.fn.get());
    }
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.valid()) continue;
      deps[e.fn.get()]++;
      if (!owner.count(e.fn.get())) {
        owner[e.fn.get()] = e.fn;
        stack.push_back(e.fn.get());
      }
    }
  }
  // 2. Seed the input buffers and run.
  std::unordered_map<Node*, tensor_list> buffers;
  auto accumulate = [&](Node* n, uint32_t slot, const Tensor& g) {
    tensor_list& buf = buffers[n];
    if (buf.size() < n->num_outputs) buf.resize(n->num_outputs);
    RNNKIT_CHECK(slot < buf.size(), "backward: internal error, gradient slot ", slot,
                 " out of range for ", n->name());
    if (!g.defined()) return;
    if (!buf[slot].defined()) {
      buf[slot] = g;
    } else if (sole_plain_handle(buf[slot]) && !g.requires_grad() && native::add_scaled_into(buf[slot], g, 1.0)) {
      // Summed in place, as PyTorch's input buffers do: no other handle sees
      // the sum so far, and no graph is being built through it. A weight used
      // at every step of a loop (a decoder cell) then gathers its gradients
      // without a fresh buffer per step.
    } else {
      buf[slot] = native::binary(buf[slot], g, native::Binary::Add, "backward accumulate");
    }
  };
  // Node::accumulate_into for n: the sums its inputs' slots hold that only
  // the engine sees.
  auto offer_sums = [&](Node& n) {
    n.accumulate_into.assign(n.next_edges.size(), Tensor());
    for (size_t i = 0; i < n.next_edges.size(); ++i) {
      const Edge& e = n.next_edges[i];
      if (!e.valid()) continue;
      bool shared_slot = false;
      for (size_t j = 0; j < n.next_edges.size() && !shared_slot; ++j)
        shared_slot = j != i && n.next_edges[j].fn == e.fn && n.next_edges[j].input_nr == e.input_nr;
      const auto it = buffers.find(e.fn.get());
      if (shared_slot || it == buffers.end() || e.input_nr >= it->second.size()) continue;
      const Tensor& sum = it->second[e.input_nr];
      if (sum.defined() && sole_plain_handle(sum) && sum.is_contiguous()) n.accumulate_into[i] = sum;
    }
  };
  auto later_first = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later_first)> ready(later_first);
  for (size_t i = 0; i < roots.size(); ++i) {
    Edge e = gradient_edge(roots[i]);
    if (!e.valid()) continue;
    accumulate(e.fn.get(), e.input_nr, grad_roots[i]);
  }
  for (auto& kv : owner)
    if (deps[kv.first] == 0) ready.push(kv.first);
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    tensor_list grads = std::move(buffers[n]);
    buffers.erase(n);
    grads.resize(n->num_outputs);
    bool any = false;
    for (const Tensor& g : grads) any = any || g.defined();
    tensor_list in_grads;
    if (any) {
      RNNKIT_CHECK(!n->released, "backward: Trying to backward through the graph a second time (or directly access "
                   "saved tensors after they have already been freed). Specify retain_graph=true "
                   "if you need to backward through the graph a second time.");
      n->last_apply = !retain_graph;
      if (n->sums_into_inputs()) offer_sums(*n);
      in_grads = n->apply(std::move(grads));
      n->accumulate_into.clear();
      if (!retain_graph && !dynamic_cast<AccumulateGrad*>(n)) {
        n->release_saved();
        n->released = true;
      }
    }
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.valid()) continue;
      if (i < in_grads.size()) accumulate(e.fn.get(), e.input_nr, in_grads[i]);
      if (--deps[e.fn.get()] == 0) ready.push(e.fn.get());
    }
  }
}

}  // namespace rnnkit::autograd
