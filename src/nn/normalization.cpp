#include "rnnkit/nn/normalization.h"

#include "util/python_repr.h"
#include "rnnkit/nn/init.h"

namespace rnnkit::nn {

LayerNormImpl::LayerNormImpl(const LayerNormOptions& options_) : options(options_) {
  for (int64_t s : options.normalized_shape())
    RNNKIT_CHECK(s >= 0, "LayerNorm: normalized_shape must be non-negative, got ",
                 shape_str(options.normalized_shape()));
  if (options.elementwise_affine()) {
    weight = register_parameter("weight", empty(options.normalized_shape()));
    bias = register_parameter("bias", empty(options.normalized_shape()));
    reset_parameters();
  }
}

void LayerNormImpl::reset_parameters() {
  if (!options.elementwise_affine()) return;
  init::ones_(weight);
  init::zeros_(bias);
}

Tensor LayerNormImpl::forward(const Tensor& input) {
  return functional::layer_norm(input, options.normalized_shape(), weight, bias, options.eps());
}

std::string LayerNormImpl::extra_repr() const {
  return util::py_tuple(options.normalized_shape()) + ", eps=" + util::py_float(options.eps()) +
         ", elementwise_affine=" + util::py_bool(options.elementwise_affine());
}

}  // namespace rnnkit::nn
