#pragma once
// TensorImpl: the state behind a Tensor handle. Internal to the library.
#include <memory>

#include "rnnkit/autograd/node.h"
#include "rnnkit/tensor.h"

namespace rnnkit {

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  Dtype dtype = Dtype::Float32;

  // Autograd. A leaf that requires grad has requires_grad=true and no grad_fn;
  // a non-leaf produced by a recorded op has grad_fn and output_nr.
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;
  uint32_t output_nr = 0;
  std::weak_ptr<autograd::Node> grad_accumulator;
};

// Contiguous (row-major) strides for a shape.
Shape contiguous_strides(const Shape& sizes);
int64_t shape_numel(const Shape& sizes);
// Normalises a possibly negative dim into [0, ndim); `op` names the caller in errors.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// A new tensor sharing t's storage with the given geometry (no autograd history).
Tensor make_view(const Tensor& t, Shape sizes, Shape strides, int64_t offset);
// Throws if t is undefined; `op`/`arg` name the caller.
void check_defined(const Tensor& t, const char* op, const char* arg);
void check_floating(const Tensor& t, const char* op, const char* arg);

// Calls f(T{}) with T the C++ type of dtype (float, double, int64_t, bool).
template <typename F>
decltype(auto) dispatch_all(Dtype dtype, const char* op, F&& f) {
  switch (dtype) {
    case Dtype::Float32: return f(float{});
    case Dtype::Float64: return f(double{});
    case Dtype::Int64: return f(int64_t{});
    case Dtype::Bool: return f(bool{});
    default: break;
  }
  throw Error(detail::concat(op, ": dtype ", dtype_name(dtype), " is not supported yet"));
}
// Same, float32/float64 only.
template <typename F>
decltype(auto) dispatch_floating(Dtype dtype, const char* op, F&& f) {
  switch (dtype) {
    case Dtype::Float32: return f(float{});
    case Dtype::Float64: return f(double{});
    default: break;
  }
  throw Error(detail::concat(op, ": expected a floating-point tensor (torch.float32 or torch.float64), got ",
                             dtype_name(dtype)));
}

}  // namespace rnnkit
