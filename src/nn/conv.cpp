#include "rnnkit/nn/conv.h"

#include <cmath>

#include "util/python_repr.h"
#include "rnnkit/nn/init.h"
#include "rnnkit/nn/padding.h"

namespace rnnkit::nn {

ConvPadding::ConvPadding(const std::string& mode) {
  if (mode == "same") {
    same_ = true;
  } else if (mode == "valid") {
    valid_ = true;
  } else {
    throw Error("Invalid padding string '" + mode + "', should be one of {'valid', 'same'}");
  }
}

std::string ConvPadding::repr() const {
  if (same_) return "same";
  if (valid_) return "valid";
  return "(" + std::to_string(amount_) + ",)";
}

Conv1dImpl::Conv1dImpl(const Conv1dOptions& options_, Generator* generator) : options(options_) {
  const Conv1dOptions& o = options;
  RNNKIT_CHECK(o.groups() > 0, "groups must be a positive integer");
  RNNKIT_CHECK(o.in_channels() % o.groups() == 0, "in_channels must be divisible by groups");
  RNNKIT_CHECK(o.out_channels() % o.groups() == 0, "out_channels must be divisible by groups");
  RNNKIT_CHECK(o.kernel_size() > 0, "Conv1d: kernel_size must be positive, got ", o.kernel_size());
  RNNKIT_CHECK(o.stride() > 0, "Conv1d: stride must be positive, got ", o.stride());
  RNNKIT_CHECK(o.dilation() > 0, "Conv1d: dilation must be positive, got ", o.dilation());
  RNNKIT_CHECK(o.padding().is_same() || o.padding().amount() >= 0, "Conv1d: padding must be non-negative, got ",
               o.padding().amount());
  const std::string& mode = o.padding_mode();
  RNNKIT_CHECK(mode == "zeros" || mode == "reflect" || mode == "replicate" || mode == "circular",
               "padding_mode must be one of ['zeros', 'reflect', 'replicate', 'circular'], but got padding_mode='",
               mode, "'");
  RNNKIT_CHECK(!o.padding().is_same() || o.stride() == 1, "padding='same' is not supported for strided convolutions");
  weight = register_parameter("weight", empty({o.out_channels(), o.in_channels() / o.groups(), o.kernel_size()}));
  if (o.bias()) bias = register_parameter("bias", empty({o.out_channels()}));
  reset_parameters(generator);
}

void Conv1dImpl::reset_parameters(Generator* generator) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, generator);
  if (bias.defined()) {
    const int64_t fan_in = init::calculate_fan_in_and_fan_out(weight).fan_in;
    if (fan_in != 0) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      init::uniform_(bias, -bound, bound, generator);
    }
  }
}

Tensor Conv1dImpl::forward(const Tensor& input) {
  const Conv1dOptions& o = options;
  if (o.padding_mode() == "zeros")
    return functional::conv1d(input, weight, bias, o.stride(), o.padding(), o.dilation(), o.groups());
  // Other modes pad explicitly first, then convolve without padding (PyTorch's order).
  int64_t left = o.padding().amount(), right = left;
  if (o.padding().is_same()) {
    const int64_t total = o.dilation() * (o.kernel_size() - 1);
    left = total / 2;
    right = total - left;
  }
  return functional::conv1d(functional::pad(input, {left, right}, o.padding_mode()), weight, bias, o.stride(), 0,
                            o.dilation(), o.groups());
}

std::string Conv1dImpl::extra_repr() const {
  const Conv1dOptions& o = options;
  std::string s = std::to_string(o.in_channels()) + ", " + std::to_string(o.out_channels()) +
                  ", kernel_size=" + util::py_tuple({o.kernel_size()}) + ", stride=" + util::py_tuple({o.stride()});
  if (!(o.padding() == ConvPadding(0))) s += ", padding=" + o.padding().repr();
  if (o.dilation() != 1) s += ", dilation=" + util::py_tuple({o.dilation()});
  if (o.groups() != 1) s += ", groups=" + std::to_string(o.groups());
  if (!bias.defined()) s += ", bias=False";
  if (o.padding_mode() != "zeros") s += ", padding_mode=" + o.padding_mode();
  return s;
}

}  // namespace rnnkit::nn
