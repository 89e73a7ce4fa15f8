#pragma once
// nn::LayerNorm: normalises over the trailing normalized_shape dimensions,
// y = (x - mean) / sqrt(var + eps) * weight + bias (biased variance), as
// torch.nn.LayerNorm.
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

struct LayerNormOptions {
  LayerNormOptions(Shape normalized_shape) : normalized_shape_(std::move(normalized_shape)) {}  // NOLINT
  /// the trailing input dimensions that are normalised together
  RNNKIT_NN_ARG(Shape, normalized_shape);
  /// added to the variance for numerical stability
  RNNKIT_NN_ARG(double, eps) = 1e-5;
  /// learn a per-element weight (init 1) and bias (init 0)
  RNNKIT_NN_ARG(bool, elementwise_affine) = true;
};

namespace functional {
// input [*, normalized_shape]; weight and bias of normalized_shape or undefined.
Tensor layer_norm(const Tensor& input, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
}  // namespace functional

class LayerNormImpl : public Module {
 public:
  explicit LayerNormImpl(const LayerNormOptions& options);
  // weight = 1, bias = 0.
  void reset_parameters();
  Tensor forward(const Tensor& input);
  // "(10,), eps=1e-05, elementwise_affine=True"
  std::string extra_repr() const override;

  LayerNormOptions options;
  Tensor weight;  // normalized_shape, undefined without elementwise_affine
  Tensor bias;
};
RNNKIT_MODULE(LayerNorm);

}  // namespace rnnkit::nn
