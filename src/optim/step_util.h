#pragma once
// Helpers shared by the optimizers' step_group implementations.
#include <type_traits>

#include "rnnkit/tensor.h"

namespace rnnkit::optim::detail {

// Calls f(float{}) or f(double{}) for the parameter's dtype (checked when the
// parameter joined the optimizer).
template <typename F>
void by_dtype(Dtype dtype, F&& f) {
  if (dtype == kFloat64)
    f(double{});
  else
    f(float{});
}

// The parameter's values as one contiguous buffer: the parameter itself, or
// a contiguous copy that commit() writes back (a parameter that is a strided view).
class ContiguousParam {
 public:
  explicit ContiguousParam(const Tensor& param)
      : param_(param), copied_(!param.is_contiguous()), work_(copied_ ? param.contiguous() : param) {}
  template <typename T>
  T* data() const {
    return work_.data_ptr<T>();
  }
  void commit() {
    if (copied_) param_.copy_(work_);
  }

 private:
  Tensor param_;
  bool copied_;
  Tensor work_;
};

// A state buffer for `param`: contiguous, the parameter's shape and dtype, filled with `value`.
inline Tensor state_buffer(const Tensor& param, double value = 0.0) {
  return full(param.sizes(), value, param.dtype());
}

// Throws when a state buffer no longer fits its parameter (its dtype or shape
// changed after the state was made, e.g. by Module::to).
void check_buffer(const Tensor& buffer, const Tensor& param, const char* optimizer, const char* name);

}  // namespace rnnkit::optim::detail
