#pragma once
// Parameter initialisation with torch.nn.init's formulas: the same fan
// computation, gains and bounds. Every function fills the tensor in place
// without recording autograd history (PyTorch runs them under no_grad) and
// returns it. Random ones take an optional Generator* (null: the global one).
#include <cstdint>

#include "rnnkit/generator.h"
#include "rnnkit/tensor.h"

namespace rnnkit::nn::init {

enum class Nonlinearity {
  Linear,
  Conv1D,
  Conv2D,
  Conv3D,
  ConvTranspose1D,
  ConvTranspose2D,
  ConvTranspose3D,
  Sigmoid,
  Tanh,
  ReLU,
  LeakyReLU,
  SELU,
};
enum class FanMode { FanIn, FanOut };

// torch.nn.init.calculate_gain; `param` is LeakyReLU's negative slope.
double calculate_gain(Nonlinearity nonlinearity, double param = 0.01);

struct Fans {
  int64_t fan_in = 0;
  int64_t fan_out = 0;
};
// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field,
// receptive field = product of sizes from dim 2 on. Needs >= 2 dimensions.
Fans calculate_fan_in_and_fan_out(const Tensor& tensor);

Tensor uniform_(Tensor tensor, double low = 0.0, double high = 1.0, Generator* generator = nullptr);
Tensor normal_(Tensor tensor, double mean = 0.0, double std = 1.0, Generator* generator = nullptr);
Tensor constant_(Tensor tensor, double value);
Tensor zeros_(Tensor tensor);
Tensor ones_(Tensor tensor);
// 2-D identity (ones on the diagonal of a possibly rectangular matrix).
Tensor eye_(Tensor tensor);

// U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)).
Tensor xavier_uniform_(Tensor tensor, double gain = 1.0, Generator* generator = nullptr);
// N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_normal_(Tensor tensor, double gain = 1.0, Generator* generator = nullptr);
// U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).
Tensor kaiming_uniform_(Tensor tensor, double a = 0.0, FanMode mode = FanMode::FanIn,
                        Nonlinearity nonlinearity = Nonlinearity::LeakyReLU, Generator* generator = nullptr);
// N(0, std^2), std = gain / sqrt(fan).
Tensor kaiming_normal_(Tensor tensor, double a = 0.0, FanMode mode = FanMode::FanIn,
                       Nonlinearity nonlinearity = Nonlinearity::LeakyReLU, Generator* generator = nullptr);
// A (semi-)orthogonal matrix from the QR decomposition of a standard normal
// one (signs fixed so R has a positive diagonal), times gain; the tensor is
// viewed as [size(0), numel / size(0)].
Tensor orthogonal_(Tensor tensor, double gain = 1.0, Generator* generator = nullptr);

}  // namespace rnnkit::nn::init
