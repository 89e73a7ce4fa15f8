#include "rnnkit/nn/linear.h"

#include <cmath>

#include "util/python_repr.h"
#include "rnnkit/nn/init.h"

namespace rnnkit::nn {

LinearImpl::LinearImpl(const LinearOptions& options_, Generator* generator) : options(options_) {
  RNNKIT_CHECK(options.in_features() >= 0, "Linear: in_features must be non-negative, got ", options.in_features());
  RNNKIT_CHECK(options.out_features() >= 0, "Linear: out_features must be non-negative, got ", options.out_features());
  weight = register_parameter("weight", empty({options.out_features(), options.in_features()}));
  if (options.bias()) bias = register_parameter("bias", empty({options.out_features()}));
  reset_parameters(generator);
}

void LinearImpl::reset_parameters(Generator* generator) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, generator);
  if (bias.defined()) {
    const int64_t fan_in = init::calculate_fan_in_and_fan_out(weight).fan_in;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform_(bias, -bound, bound, generator);
  }
}

Tensor LinearImpl::forward(const Tensor& input) { return functional::linear(input, weight, bias); }

std::string LinearImpl::extra_repr() const {
  return "in_features=" + std::to_string(options.in_features()) +
         ", out_features=" + std::to_string(options.out_features()) + ", bias=" + util::py_bool(bias.defined());
}

}  // namespace rnnkit::nn
