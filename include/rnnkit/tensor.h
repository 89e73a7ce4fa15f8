#pragma once
// Tensor: a handle to shape, strides, offset, dtype and device over shared
// storage. Copies of a Tensor share everything (like torch.Tensor in Python);
// views (view, transpose, narrow, select, expand, ...) share the storage with
// new strides; clone() copies.
//
// The autograd fields (requires_grad, grad, grad_fn) live here too, but the
// tensor layer only stores them: graph construction is done by the
// differentiable ops in rnnkit/ops.h.
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "rnnkit/dtype.h"
#include "rnnkit/error.h"
#include "rnnkit/generator.h"

namespace rnnkit {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);  // "[2, 3]"

namespace autograd {
class Node;
}

// Raw bytes, 64-byte aligned, shared between a tensor and its views.
//
// version() counts the writable pointers handed out: every data() call (and so
// every Tensor::data_ptr / raw_data, which every write in the library goes
// through: in-place ops, optimizers, copies, loading) advances it;
// const_data() does not. A reader that derives something from the bytes (the
// recurrent modules keep W_hh packed between inference calls) notes the
// version and takes the bytes as unchanged while it stays the same. The
// version moves when a pointer is handed out, not when it is written through:
// a write through a pointer kept from before such a reader's last look is not
// seen. Take a fresh data_ptr for each change (or call data_ptr once after
// writing through an old one).
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const {
    version_.fetch_add(1, std::memory_order_relaxed);
    return data_;
  }
  const void* const_data() const { return data_; }
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  mutable std::atomic<uint64_t> version_{0};
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

struct TensorImpl;

struct TensorOptions {
  Dtype dtype_ = Dtype::Float32;
  Device device_ = Device();
  bool requires_grad_ = false;
  TensorOptions() = default;
  TensorOptions(Dtype d) : dtype_(d) {}  // NOLINT: implicit, as in libtorch
  TensorOptions& dtype(Dtype d) { dtype_ = d; return *this; }
  TensorOptions& device(Device d) { device_ = d; return *this; }
  TensorOptions& requires_grad(bool r = true) { requires_grad_ = r; return *this; }
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

  // ---- metadata ----
  const Shape& sizes() const;
  const Shape& shape() const { return sizes(); }
  const Shape& strides() const;
  int64_t size(int64_t dim) const;    // negative dims count from the end
  int64_t stride(int64_t dim) const;
  int64_t dim() const;
  int64_t numel() const;
  int64_t storage_offset() const;
  Dtype dtype() const;
  Device device() const;
  bool is_contiguous() const;
  bool is_floating_point() const { return is_floating(dtype()); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;

  // Typed pointer to the first element (storage + offset). T must match dtype.
  // Advances the storage's version (see Storage): use const_data_ptr to read.
  template <typename T>
  T* data_ptr() const;
  void* raw_data() const;
  // The same pointer for reading only; leaves the version alone.
  template <typename T>
  const T* const_data_ptr() const;
  const void* const_raw_data() const;
  // Value of a one-element tensor as double (int64/bool converted).
  double item() const;
  template <typename T>
  T item() const { return static_cast<T>(item()); }
  // Copies all elements (in logical row-major order) into a vector.
  template <typename T>
  std::vector<T> to_vector() const;

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as needing a gradient. Throws on a non-leaf or a non-float tensor.
  Tensor& requires_grad_(bool requires = true);
  bool is_leaf() const;
  // Accumulated gradient (undefined until a backward reaches this leaf).
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  uint32_t output_nr() const;
  // Runs backprop from this tensor. A scalar needs no gradient argument;
  // otherwise gradient must have this tensor's shape.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  // Same data, no history, requires_grad false.
  Tensor detach() const;
  Tensor& detach_();
  // Makes this tensor (and every handle sharing it) hold new_data's storage,
  // shape and dtype, keeping its autograd flags (PyTorch's `t.data = ...`).
  void set_data(const Tensor& new_data) const;

  // ---- views (share storage) ----
  Tensor view(const Shape& shape) const;     // one dim may be -1; needs compatible strides
  Tensor reshape(const Shape& shape) const;  // view when possible, otherwise a copy
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor t() const;  // 2-D transpose
  Tensor permute(const Shape& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(const Shape& shape) const;  // -1 keeps a size
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  std::vector<Tensor> chunk(int64_t chunks, int64_t dim = 0) const;
  std::vector<Tensor> split(int64_t split_size, int64_t dim = 0) const;
  std::vector<Tensor> unbind(int64_t dim = 0) const;

  // ---- copies ----
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(Dtype dtype) const;

  // ---- in-place (not recorded by autograd; throw on a leaf that requires
  // grad while grad mode is on, like PyTorch) ----
  Tensor& zero_();
  Tensor& fill_(double value);
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape, dtype converted
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double value);
  Tensor& mul_(const Tensor& other);
  Tensor& uniform_(double from = 0.0, double to = 1.0, Generator* gen = nullptr);
  Tensor& normal_(double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
  Tensor& masked_fill_(const Tensor& mask, double value);
  Tensor& clamp_(double min, double max);

  // ---- differentiable methods (forward to rnnkit/ops.h) ----
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor matmul(const Tensor& other) const;
  Tensor exp() const;
  Tensor log() const;
  Tensor tanh() const;
  Tensor sigmoid() const;
  Tensor relu() const;
  Tensor pow(double exponent) const;
  Tensor sqrt() const;
  Tensor abs() const;
  Tensor neg() const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor max() const;
  Tensor min() const;
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor norm(double p = 2.0) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories ----
Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
// [start, end) with step; dtype defaults to int64 like torch.arange with ints.
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = kInt64);
Tensor arange(int64_t end, TensorOptions options = kInt64);
Tensor rand(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);
Tensor randn(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);
// Random permutation of 0..n-1 (int64).
Tensor randperm(int64_t n, Generator* gen = nullptr);
// Copies data into a new tensor of the given shape (shape {} = 1-D of data.size()).
Tensor from_vector(const std::vector<float>& data, const Shape& shape = {}, TensorOptions options = kFloat32);
Tensor from_vector(const std::vector<double>& data, const Shape& shape = {}, TensorOptions options = kFloat64);
Tensor from_vector(const std::vector<int64_t>& data, const Shape& shape = {}, TensorOptions options = kInt64);
Tensor tensor(std::initializer_list<float> data, TensorOptions options = kFloat32);
Tensor tensor(std::initializer_list<double> data, TensorOptions options = kFloat64);
Tensor tensor(std::initializer_list<int64_t> data, TensorOptions options = kInt64);
Tensor scalar_tensor(double value, TensorOptions options = {});
// n x n identity matrix.
Tensor eye(int64_t n, TensorOptions options = {});
// Copies numel*element_size bytes of caller memory into a new contiguous tensor.
Tensor from_blob(void* data, const Shape& shape, Dtype dtype);

bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
bool equal(const Tensor& a, const Tensor& b);  // same shape and identical values

}  // namespace rnnkit
