// View operations (share storage) and copies, with their autograd nodes.
// Non-overlapping views share one backward: replay the same view on a zero
// gradient buffer of the input's shape and write the incoming gradient into
// it. expand (overlapping) sums instead.
#include <algorithm>
#include <functional>
#include <numeric>

#include "rnnkit/autograd/node.h"
#include "rnnkit/ops.h"
#include "tensor/iter.h"
#include "tensor/native.h"
#include "tensor/tensor_impl.h"

namespace rnnkit {
namespace {

using ViewFn = std::function<Tensor(const Tensor&)>;

class ViewBackward final : public autograd::Node {
 public:
  ViewBackward(std::string name, Shape input_shape, Dtype dtype, ViewFn replay)
      : name_(std::move(name)), input_shape_(std::move(input_shape)), dtype_(dtype),
        replay_(std::move(replay)) {}
  autograd::tensor_list apply(autograd::tensor_list&& grads) override {
    Tensor grad_input = zeros(input_shape_, TensorOptions(dtype_));
    native::copy_into(replay_(grad_input), grads[0]);
    return {grad_input};
  }
  std::string name() const override { return name_; }

 private:
  std::string name_;
  Shape input_shape_;
  Dtype dtype_;
  ViewFn replay_;
};

// Applies a raw view function and records its backward when needed.
Tensor record_view(const Tensor& self, const char* name, const ViewFn& raw) {
  Tensor out = raw(self);
  if (autograd::needs_grad({&self})) {
    auto node = std::make_shared<ViewBackward>(name, self.sizes(), self.dtype(), raw);
    autograd::connect(node, {self}, {&out});
  }
  return out;
}

class ExpandBackward final : public autograd::Node {
 public:
  explicit ExpandBackward(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  autograd::tensor_list apply(autograd::tensor_list&& grads) override {
    return {autograd::sum_to(grads[0], input_shape_)};
  }
  std::string name() const override { return "ExpandBackward0"; }

 private:
  Shape input_shape_;
};

class CopyBackward final : public autograd::Node {
 public:
  explicit CopyBackward(Dtype input_dtype) : input_dtype_(input_dtype) {}
  autograd::tensor_list apply(autograd::tensor_list&& grads) override {
    return {grads[0].to(input_dtype_)};
  }
  std::string name() const override { return "CloneBackward0"; }

 private:
  Dtype input_dtype_;
};

// Resolves a single -1 in a requested shape.
Shape infer_size(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      RNNKIT_CHECK(infer < 0, op, ": only one dimension can be inferred");
      infer = static_cast<int64_t>(i);
    } else {
      RNNKIT_CHECK(out[i] >= 0, op, ": invalid shape dimension ", out[i]);
      known *= out[i];
    }
  }
  if (infer >= 0) {
    RNNKIT_CHECK(known != 0 && numel % known == 0, op, ": shape '", shape_str(shape),
                 "' is invalid for input of size ", numel);
    out[infer] = numel / known;
  }
  RNNKIT_CHECK(shape_numel(out) == numel, op, ": shape '", shape_str(shape),
               "' is invalid for input of size ", numel);
  return out;
}

// Strides for viewing (sizes, strides) as new_sizes without a copy, or empty
// if the memory layout does not allow it.
bool compute_view_strides(const Shape& sizes, const Shape& strides, const Shape& new_sizes,
                          Shape* out) {
  // Merge old dims into contiguous chunks and split them into the new dims.
  Shape result(new_sizes.size());
  if (shape_numel(sizes) == 0 || sizes.empty()) {
    *out = contiguous_strides(new_sizes);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_sizes.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    tensor_numel *= sizes[d];
    if (d == 0 || (sizes[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_sizes[view_d] == 1)) {
        result[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_sizes[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return false;
  *out = result;
  return true;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  check_defined(*this, "view", "self");
  Shape new_sizes = infer_size(shape, numel(), "view");
  Shape new_strides;
  RNNKIT_CHECK(compute_view_strides(sizes(), strides(), new_sizes, &new_strides),
               "view: view size is not compatible with input tensor's size and stride (at least one "
               "dimension spans across two contiguous subspaces). Use .reshape(...) instead.");
  return record_view(*this, "ViewBackward0", [new_sizes](const Tensor& t) {
    Shape st;
    compute_view_strides(t.sizes(), t.strides(), new_sizes, &st);
    return make_view(t, new_sizes, st, t.storage_offset());
  });
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_defined(*this, "reshape", "self");
  Shape new_sizes = infer_size(shape, numel(), "reshape");
  Shape new_strides;
  if (compute_view_strides(sizes(), strides(), new_sizes, &new_strides)) return view(new_sizes);
  return clone().view(new_sizes);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  check_defined(*this, "flatten", "self");
  if (dim() == 0) return reshape({1});
  const int64_t s = wrap_dim(start_dim, dim(), "flatten");
  const int64_t e = wrap_dim(end_dim, dim(), "flatten");
  RNNKIT_CHECK(s <= e, "flatten: start_dim cannot come after end_dim");
  Shape ns(sizes().begin(), sizes().begin() + s);
  int64_t m = 1;
  for (int64_t d = s; d <= e; ++d) m *= sizes()[d];
  ns.push_back(m);
  ns.insert(ns.end(), sizes().begin() + e + 1, sizes().end());
  return reshape(ns);
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  check_defined(*this, "transpose", "self");
  if (dim() == 0) return *this;
  const int64_t a = wrap_dim(dim0, dim(), "transpose");
  const int64_t b = wrap_dim(dim1, dim(), "transpose");
  return record_view(*this, "TransposeBackward0", [a, b](const Tensor& t) {
    Shape sz = t.sizes(), st = t.strides();
    std::swap(sz[a], sz[b]);
    std::swap(st[a], st[b]);
    return make_view(t, sz, st, t.storage_offset());
  });
}

Tensor Tensor::t() const {
  RNNKIT_CHECK(dim() <= 2, "t: expects a tensor with <= 2 dimensions, but self is ", dim(), "D");
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::permute(const Shape& dims) const {
  check_defined(*this, "permute", "self");
  RNNKIT_CHECK(static_cast<int64_t>(dims.size()) == dim(),
               "permute: number of dims don't match in permute (expected ", dim(), ", got ",
               dims.size(), ")");
  Shape wrapped(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    wrapped[i] = wrap_dim(dims[i], dim(), "permute");
    RNNKIT_CHECK(!seen[wrapped[i]], "permute: repeated dim ", dims[i], " in ", shape_str(dims));
    seen[wrapped[i]] = true;
  }
  return record_view(*this, "PermuteBackward0", [wrapped](const Tensor& t) {
    Shape sz(wrapped.size()), st(wrapped.size());
    for (size_t i = 0; i < wrapped.size(); ++i) {
      sz[i] = t.sizes()[wrapped[i]];
      st[i] = t.strides()[wrapped[i]];
    }
    return make_view(t, sz, st, t.storage_offset());
  });
}

Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
  check_defined(*this, "slice", "self");
  RNNKIT_CHECK(dim() > 0, "slice: cannot be applied to a 0-dim tensor");
  const int64_t d = wrap_dim(dim_, dim(), "slice");
  RNNKIT_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = sizes()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  const int64_t len = (end - start + step - 1) / step;
  return record_view(*this, "SliceBackward0", [d, start, step, len](const Tensor& t) {
    Shape sz = t.sizes(), st = t.strides();
    const int64_t off = t.storage_offset() + start * st[d];
    sz[d] = len;
    st[d] *= step;
    return make_view(t, sz, st, off);
  });
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  check_defined(*this, "narrow", "self");
  RNNKIT_CHECK(dim() > 0, "narrow: narrow() cannot be applied to a 0-dim tensor.");
  const int64_t d = wrap_dim(dim_, dim(), "narrow");
  const int64_t n = sizes()[d];
  if (start < 0) start += n;
  RNNKIT_CHECK(start >= 0 && start <= n, "narrow: start (", start, ") out of range for dimension ",
               d, " of size ", n);
  RNNKIT_CHECK(length >= 0 && start + length <= n, "narrow: start (", start, ") + length (",
               length, ") exceeds dimension size (", n, ").");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
  check_defined(*this, "select", "self");
  RNNKIT_CHECK(dim() > 0, "select: select() cannot be applied to a 0-dim tensor.");
  const int64_t d = wrap_dim(dim_, dim(), "select");
  const int64_t n = sizes()[d];
  RNNKIT_CHECK(index >= -n && index < n, "select: index ", index,
               " out of range for tensor of size ", shape_str(sizes()), " at dimension ", d);
  if (index < 0) index += n;
  return record_view(*this, "SelectBackward0", [d, index](const Tensor& t) {
    Shape sz = t.sizes(), st = t.strides();
    const int64_t off = t.storage_offset() + index * st[d];
    sz.erase(sz.begin() + d);
    st.erase(st.begin() + d);
    return make_view(t, sz, st, off);
  });
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
  check_defined(*this, "unsqueeze", "self");
  const int64_t d = wrap_dim(dim_, dim() + 1, "unsqueeze");
  return record_view(*this, "UnsqueezeBackward0", [d](const Tensor& t) {
    Shape sz = t.sizes(), st = t.strides();
    const int64_t s = d < t.dim() ? st[d] * sz[d] : 1;
    sz.insert(sz.begin() + d, 1);
    st.insert(st.begin() + d, s);
    return make_view(t, sz, st, t.storage_offset());
  });
}

Tensor Tensor::squeeze() const {
  check_defined(*this, "squeeze", "self");
  return record_view(*this, "SqueezeBackward0", [](const Tensor& t) {
    Shape sz, st;
    for (int64_t i = 0; i < t.dim(); ++i) {
      if (t.sizes()[i] == 1) continue;
      sz.push_back(t.sizes()[i]);
      st.push_back(t.strides()[i]);
    }
    return make_view(t, sz, st, t.storage_offset());
  });
}

Tensor Tensor::squeeze(int64_t dim_) const {
  check_defined(*this, "squeeze", "self");
  if (dim() == 0) return *this;
  const int64_t d = wrap_dim(dim_, dim(), "squeeze");
  if (sizes()[d] != 1) return *this;
  return record_view(*this, "SqueezeBackward1", [d](const Tensor& t) {
    Shape sz = t.sizes(), st = t.strides();
    sz.erase(sz.begin() + d);
    st.erase(st.begin() + d);
    return make_view(t, sz, st, t.storage_offset());
  });
}

Tensor Tensor::expand(const Shape& shape) const {
  check_defined(*this, "expand", "self");
  RNNKIT_CHECK(static_cast<int64_t>(shape.size()) >= dim(), "expand: the number of sizes provided (",
               shape.size(), ") must be greater or equal to the number of dimensions in the tensor (",
               dim(), ")");
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t lead = nd - dim();
  Shape sz(nd), st(nd);
  for (int64_t i = nd - 1; i >= 0; --i) {
    const int64_t j = i - lead;
    if (j >= 0) {
      const int64_t have = sizes()[j];
      const int64_t want = shape[i] == -1 ? have : shape[i];
      RNNKIT_CHECK(have == want || have == 1, "expand: The expanded size of the tensor (", want,
                   ") must match the existing size (", have, ") at non-singleton dimension ", i,
                   ".  Target sizes: ", shape_str(shape), ".  Tensor sizes: ", shape_str(sizes()));
      sz[i] = want;
      st[i] = have == want ? strides()[j] : 0;
    } else {
      RNNKIT_CHECK(shape[i] >= 0, "expand: the expanded size ", shape[i],
                   " is not allowed in a leading, non-existing dimension ", i);
      sz[i] = shape[i];
      st[i] = 0;
    }
  }
  Tensor out = make_view(*this, sz, st, storage_offset());
  if (autograd::needs_grad({this})) {
    auto node = std::make_shared<ExpandBackward>(sizes());
    autograd::connect(node, {*this}, {&out});
  }
  return out;
}

std::vector<Tensor> Tensor::split(int64_t split_size, int64_t dim_) const {
  check_defined(*this, "split", "self");
  RNNKIT_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  const int64_t d = wrap_dim(dim_, dim(), "split");
  std::vector<Tensor> parts;
  for (int64_t s = 0; s < sizes()[d]; s += split_size)
    parts.push_back(narrow(d, s, std::min(split_size, sizes()[d] - s)));
  return parts;
}

std::vector<Tensor> Tensor::chunk(int64_t chunks, int64_t dim_) const {
  RNNKIT_CHECK(chunks > 0, "chunk: chunk expects `chunks` to be greater than 0, got: ", chunks);
  const int64_t d = wrap_dim(dim_, dim(), "chunk");
  const int64_t n = sizes()[d];
  return split(std::max<int64_t>((n + chunks - 1) / chunks, 1), d);
}

std::vector<Tensor> Tensor::unbind(int64_t dim_) const {
  const int64_t d = wrap_dim(dim_, dim(), "unbind");
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < sizes()[d]; ++i) parts.push_back(select(d, i));
  return parts;
}

Tensor Tensor::clone() const {
  check_defined(*this, "clone", "self");
  Tensor out = native::contiguous(make_view(*this, sizes(), strides(), storage_offset()));
  if (out.impl()->storage == impl()->storage) {
    Tensor copy = empty(sizes(), TensorOptions(dtype()));
    native::copy_into(copy, out);
    out = copy;
  }
  if (autograd::needs_grad({this})) {
    auto node = std::make_shared<CopyBackward>(dtype());
    autograd::connect(node, {*this}, {&out});
  }
  return out;
}

Tensor Tensor::to(Dtype target) const {
  check_defined(*this, "to", "self");
  if (target == dtype()) return *this;
  Tensor out = empty(sizes(), TensorOptions(target));
  native::copy_into(out, *this);
  if (is_floating(target) && is_floating(dtype()) && autograd::needs_grad({this})) {
    auto node = std::make_shared<CopyBackward>(dtype());
    autograd::connect(node, {*this}, {&out});
  }
  return out;
}

Tensor flip(const Tensor& x, const Shape& dims) {
  check_defined(x, "flip", "input");
  Shape ds;
  for (int64_t d : dims) ds.push_back(wrap_dim(d, x.dim(), "flip"));
  // Flipping is a negative-stride view; materialise it since strides here are
  // non-negative by convention.
  Shape sizes = x.sizes();
  Tensor out = empty(sizes, TensorOptions(x.dtype()));
  Tensor src = x.detach();
  Tensor cur = src;
  for (int64_t d : ds) {
    Tensor rev = arange(static_cast<double>(sizes[d] - 1), -1.0, -1.0);
    cur = native::index_select(cur, d, rev);
  }
  native::copy_into(out, cur);
  if (autograd::needs_grad({&x})) {
    struct FlipBackward final : autograd::Node {
      Shape dims;
      autograd::tensor_list apply(autograd::tensor_list&& g) override { return {flip(g[0], dims)}; }
      std::string name() const override { return "FlipBackward0"; }
    };
    auto node = std::make_shared<FlipBackward>();
    node->dims = ds;
    autograd::connect(node, {x}, {&out});
  }
  return out;
}

}  // namespace rnnkit
