#include "rnnkit/nn/dropout.h"

#include "util/python_repr.h"

namespace rnnkit::nn {

DropoutImpl::DropoutImpl(const DropoutOptions& options_) : options(options_) {
  RNNKIT_CHECK(options.p() >= 0.0 && options.p() <= 1.0, "dropout probability has to be between 0 and 1, but got ",
               util::py_float(options.p()));
}

Tensor DropoutImpl::forward(const Tensor& input, Generator* generator) {
  return functional::dropout(input, options.p(), is_training(), options.inplace(), generator);
}

std::string DropoutImpl::extra_repr() const {
  return "p=" + util::py_float(options.p()) + ", inplace=" + util::py_bool(options.inplace());
}

}  // namespace rnnkit::nn
